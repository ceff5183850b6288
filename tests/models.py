"""Sample models for tests; they live in `serving.samples` so the demo can build them too."""

from serving.samples import (
    CHAT_TEMPLATE,
    CORPUS,
    build_bpe_tokenizer,
    build_minilm_classifier,
    build_tiny_classifier,
    build_tiny_fill_mask,
    build_tiny_generator,
    build_tiny_seq2seq,
    build_tiny_token_classifier,
    minilm_dir,
)

__all__ = [
    "CHAT_TEMPLATE",
    "CORPUS",
    "build_bpe_tokenizer",
    "build_minilm_classifier",
    "build_tiny_classifier",
    "build_tiny_fill_mask",
    "build_tiny_generator",
    "build_tiny_seq2seq",
    "build_tiny_token_classifier",
    "minilm_dir",
]
