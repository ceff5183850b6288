"""Encoder tasks: sequence/token classification, fill-mask and text embedding.

One ``predict_batch`` call runs one forward pass over the texts of several requests (the
dynamic batcher's batch) and returns each request's predictions in KServe huggingfaceserver's
shapes (``encoder_model.py::postprocess``):

* sequence_classification: class index, or ``{label: p}`` rounded to 4 decimals
  (``--return_probabilities``), or ``{label: logit}`` (``--return_raw_logits``);
* token_classification: ``[[class per token]]`` (note the extra nesting), or one dict per token;
  rows are as long as the longest text *of the same request*, so batching with other requests
  never changes a response;
* fill_mask: the decoded token(s) at the ``[MASK]`` position(s), or per mask one dict per
  vocabulary entry (probabilities as strings, like KServe);
* text_embedding: mean pooling over the attention mask, then L2 normalisation.

Runs in the worker thread; nothing here touches the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.config import ServerConfig
from serving.errors import ModelLoadError
from serving.model_loading import load_tokenizer, load_weights
from serving.tasks import Task

_MODEL_CLASSES = {
    Task.sequence_classification: "AutoModelForSequenceClassification",
    Task.token_classification: "AutoModelForTokenClassification",
    Task.fill_mask: "AutoModelForMaskedLM",
    Task.text_embedding: "AutoModel",
}


@dataclass(frozen=True)
class EncoderResult:
    """One request's outcome: a prediction per input text, and the tokens it used (for ``usage``)."""

    predictions: list[Any]
    prompt_tokens: int


class EncoderModel:
    """A loaded encoder model with its tokenizer and the output flags it was started with."""

    def __init__(
        self,
        *,
        task: Task,
        model: Any,
        tokenizer: Any,
        max_model_len: int,
        add_special_tokens: bool = True,
        return_probabilities: bool = False,
        return_raw_logits: bool = False,
    ) -> None:
        self.task = task
        self.model = model
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.add_special_tokens = add_special_tokens
        self.return_probabilities = return_probabilities
        self.return_raw_logits = return_raw_logits

    @classmethod
    def load(cls, path: Path, *, task: Task, config: ServerConfig, model_config: Any,
             max_model_len: int, tokenizer_path: Path | None = None) -> EncoderModel:
        """Load tokenizer and weights for an encoder ``task``.

        Raises:
            ModelLoadError: the files cannot be loaded, or fill_mask without a mask token.
        """
        import transformers

        tokenizer = load_tokenizer(tokenizer_path or path, config, do_lower_case=not config.disable_lower_case)
        tokenizer.padding_side = "right"
        model = load_weights(getattr(transformers, _MODEL_CLASSES[task]), path, config, model_config)
        if tokenizer.pad_token is None:
            # Same fallback as KServe: a [PAD] token, and embeddings resized to cover it.
            tokenizer.add_special_tokens({"pad_token": "[PAD]"})
            model.resize_token_embeddings(len(tokenizer))
        if task is Task.fill_mask and tokenizer.mask_token_id is None:
            raise ModelLoadError("fill_mask needs a tokenizer with a mask token; this one has none")
        return cls(
            task=task,
            model=model,
            tokenizer=tokenizer,
            max_model_len=max_model_len,
            add_special_tokens=not config.disable_special_tokens,
            return_probabilities=config.return_probabilities,
            return_raw_logits=config.return_raw_logits,
        )

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes after truncation, special tokens included."""
        ids = self.tokenizer(text, add_special_tokens=self.add_special_tokens, truncation=True,
                             max_length=self.max_model_len)["input_ids"]
        return len(ids)

    def predict_batch(self, requests: list[list[str]]) -> list[EncoderResult]:
        """Run the texts of all ``requests`` as one padded batch; split the results back.

        Example:
            ``predict_batch([["Hello, my dog is cute"], ["a", "b"]])`` for a 2-class classifier
            gives ``[EncoderResult([1], 8), EncoderResult([0, 0], 6)]``.
        """
        import torch

        texts = [text for request in requests for text in request]
        encoded = self.tokenizer(
            texts,
            max_length=self.max_model_len,
            add_special_tokens=self.add_special_tokens,
            padding=True,
            truncation=True,
            return_tensors="pt",
        )
        with torch.inference_mode():
            output = self.model(**encoded, return_dict=True)
        lengths = encoded["attention_mask"].sum(dim=1).tolist()
        if self.task is Task.text_embedding:
            tensor = _mean_pool_normalize(output.last_hidden_state, encoded["attention_mask"])
        else:
            tensor = output.logits.float()
        results: list[EncoderResult] = []
        start = 0
        for request in requests:
            rows = range(start, start + len(request))
            request_len = max((lengths[i] for i in rows), default=0)
            predictions = [self._postprocess(tensor[i], encoded["input_ids"][i], request_len) for i in rows]
            results.append(EncoderResult(predictions, int(sum(lengths[i] for i in rows))))
            start += len(request)
        return results

    def _postprocess(self, row: Any, input_ids: Any, request_len: int) -> Any:
        if self.task is Task.sequence_classification:
            return self._classes(row)
        if self.task is Task.token_classification:
            tokens = row[:request_len]
            if self.return_raw_logits or self.return_probabilities:
                return [self._classes(token) for token in tokens]
            return [tokens.argmax(dim=-1).tolist()]
        if self.task is Task.fill_mask:
            return self._fill_mask(row, input_ids)
        return row.tolist()

    def _classes(self, logits: Any) -> Any:
        """Argmax, or the label -> probability / logit dict, as the flags ask."""
        import torch

        if self.return_raw_logits:
            return dict(enumerate(logits.tolist()))
        if self.return_probabilities:
            probabilities = torch.softmax(logits, dim=-1).tolist()
            return {j: float(f"{p:.4f}") for j, p in enumerate(probabilities)}
        return int(logits.argmax().item())

    def _fill_mask(self, logits: Any, input_ids: Any) -> Any:
        import torch

        positions = (input_ids == self.tokenizer.mask_token_id).nonzero(as_tuple=True)[0]
        masked = logits[positions]
        if self.return_raw_logits:
            return [[{token_id: value} for token_id, value in enumerate(row.tolist())] for row in masked]
        if self.return_probabilities:
            return [
                [{token_id: f"{p:.4f}"} for token_id, p in enumerate(row.tolist())]
                for row in torch.softmax(masked, dim=-1)
            ]
        return self.tokenizer.decode(masked.argmax(dim=-1))


def _mean_pool_normalize(hidden: Any, attention_mask: Any) -> Any:
    """Mean over real tokens, then L2 normalise: KServe's (and sentence-transformers') pooling."""
    import torch.nn.functional as F

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize((summed / counts).float(), p=2, dim=1)
