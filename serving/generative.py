"""Generative tasks (text_generation, text2text_generation): prompts in, text out, in batches.

``generate_batch`` runs the rows of several requests through one ``model.generate`` call. Rows
may differ in prompt, ``max_tokens`` and stop sequences, so a ``_RowTracker`` (a transformers
``StoppingCriteria``) follows every row token by token: it detokenises incrementally, ends a row
at EOS, at a stop sequence or at its own token budget, and hands text deltas to the row's
``on_delta`` callback for streaming. Sampling parameters are shared by the whole call; the
service only batches requests whose ``SamplingParams.batch_key`` match.

Decoder-only prompts are padded on the left so every row continues right after its prompt.
Runs in the worker thread; ``on_delta`` callbacks must be thread-safe.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import StoppingCriteria, StoppingCriteriaList

from serving.config import ServerConfig
from serving.errors import InvalidInput
from serving.model_loading import load_tokenizer, load_weights
from serving.sampling import GenerationResult, GenerationRow, SamplingParams
from serving.tasks import Task
from serving.textstream import TextStream

log = logging.getLogger("serving")


class GenerativeModel:
    """A loaded causal or sequence-to-sequence LM with its tokenizer."""

    def __init__(self, *, task: Task, model: Any, tokenizer: Any, max_model_len: int,
                 add_special_tokens: bool = True) -> None:
        self.task = task
        self.model = model
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.add_special_tokens = add_special_tokens
        self.is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        self.eos_token_ids = _eos_ids(model, tokenizer)

    @classmethod
    def load(cls, path: Path, *, task: Task, config: ServerConfig, model_config: Any,
             max_model_len: int, tokenizer_path: Path | None = None) -> GenerativeModel:
        """Load tokenizer and weights for a generative ``task``.

        Raises:
            ModelLoadError: the files cannot be loaded.
        """
        tokenizer = load_tokenizer(tokenizer_path or path, config)
        model_class = (transformers.AutoModelForCausalLM if task is Task.text_generation
                       else transformers.AutoModelForSeq2SeqLM)
        model = load_weights(model_class, path, config, model_config)
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is not None:
                # Padding is masked out, so reusing EOS is safe and keeps the vocabulary intact.
                tokenizer.pad_token = tokenizer.eos_token
            else:
                tokenizer.add_special_tokens({"pad_token": "[PAD]"})
                model.resize_token_embeddings(len(tokenizer))
        tokenizer.padding_side = "right" if task is Task.text2text_generation else "left"
        return cls(task=task, model=model, tokenizer=tokenizer, max_model_len=max_model_len,
                   add_special_tokens=not config.disable_special_tokens)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode(self, text: str, *, add_special_tokens: bool | None = None) -> list[int]:
        """Token ids of a prompt."""
        special = self.add_special_tokens if add_special_tokens is None else add_special_tokens
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def render_chat(self, messages: list[dict[str, Any]], *, chat_template: str | None = None,
                    add_generation_prompt: bool = True, continue_final_message: bool = False,
                    tools: list[dict[str, Any]] | None = None,
                    template_kwargs: dict[str, Any] | None = None) -> tuple[str, bool]:
        """Turn chat messages into a prompt.

        Returns:
            The prompt, and whether a chat template produced it (its special tokens are then
            already in the text, so the prompt is tokenised without adding more).

        Without a template (the request's ``chat_template`` or the tokenizer's), the fallback is
        one ``role: content`` line per message followed by ``assistant:``.
        """
        template = chat_template or getattr(self.tokenizer, "chat_template", None)
        if not template:
            lines = [f"{m['role']}: {m['content']}" for m in messages]
            if add_generation_prompt and not continue_final_message:
                lines.append("assistant:")
            return "\n".join(lines), False
        try:
            rendered = self.tokenizer.apply_chat_template(
                messages,
                chat_template=template,
                tokenize=False,
                add_generation_prompt=add_generation_prompt and not continue_final_message,
                continue_final_message=continue_final_message,
                tools=tools,
                **(template_kwargs or {}),
            )
        except Exception as exc:
            raise InvalidInput(f"cannot apply the chat template to these messages: {exc}") from exc
        return str(rendered), True

    def generate_batch(self, rows: list[GenerationRow], params: SamplingParams) -> list[GenerationResult]:
        """Continue every row's prompt in one ``generate()`` call."""
        tracker = _RowTracker(rows, self.decode, self.eos_token_ids)
        pad_id = self.tokenizer.pad_token_id
        width = max(len(row.prompt_ids) for row in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row.prompt_ids)
            span = slice(0, n) if self.is_encoder_decoder else slice(width - n, width)
            input_ids[i, span] = torch.tensor(row.prompt_ids, dtype=torch.long)
            attention[i, span] = 1
        generation_config = self._generation_config(params, max(row.max_new_tokens for row in rows))
        if params.do_sample and params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            self.model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                generation_config=generation_config,
                stopping_criteria=StoppingCriteriaList([tracker]),
            )
        return tracker.results()

    def _generation_config(self, params: SamplingParams, max_new_tokens: int) -> Any:
        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = max_new_tokens
        config.max_length = None
        config.min_new_tokens = None
        config.num_return_sequences = 1
        config.num_beams = 1
        config.pad_token_id = self.tokenizer.pad_token_id
        config.eos_token_id = sorted(self.eos_token_ids) or None
        config.do_sample = params.do_sample
        # Defaults of a greedy call; sampling fields set below only when sampling, so
        # transformers does not warn about unused sampling flags.
        config.temperature, config.top_p, config.top_k = 1.0, 1.0, None
        if params.do_sample:
            config.temperature = params.temperature
            config.top_p = params.top_p if params.top_p is not None else 1.0
            config.top_k = params.top_k or None
        config.repetition_penalty = params.repetition_penalty or 1.0
        config.sequence_bias = {(token,): bias for token, bias in params.logit_bias} or None
        return config


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list | tuple):
            ids.update(int(i) for i in source)
    return ids


class _RowTracker(StoppingCriteria):
    """Follows each row of a ``generate()`` call: text, stop sequences, budget, streaming."""

    def __init__(self, rows: list[GenerationRow], decode: Callable[[list[int]], str], eos: set[int]) -> None:
        self.rows = rows
        self.eos = eos
        self.streams = [TextStream(decode, row.stop) for row in rows]
        self.finish: list[str | None] = [None] * len(rows)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        for i, token in enumerate(input_ids[:, -1].tolist()):
            if self.finish[i] is None:
                self._advance(i, int(token))
        return torch.tensor([reason is not None for reason in self.finish], dtype=torch.bool)  # type: ignore[return-value]

    def _advance(self, i: int, token: int) -> None:
        row, stream = self.rows[i], self.streams[i]
        if row.cancelled:
            self.finish[i] = "cancelled"
            return
        if token in self.eos:
            self._end(i, "stop")
            return
        delta = stream.add(token)
        if delta and row.on_delta is not None:
            row.on_delta(delta)
        if stream.stopped:
            self._end(i, "stop")
        elif len(stream.ids) >= row.max_new_tokens:
            self._end(i, "length")

    def _end(self, i: int, reason: str) -> None:
        self.finish[i] = reason
        tail = self.streams[i].finish()
        on_delta = self.rows[i].on_delta
        if tail and on_delta is not None:
            on_delta(tail)

    def results(self) -> list[GenerationResult]:
        for i, reason in enumerate(self.finish):
            if reason is None:  # generate() ended on its own limit before the row's budget
                self._end(i, "length")
        return [
            GenerationResult(
                text=stream.text,
                finish_reason=reason or "length",
                prompt_tokens=len(row.prompt_ids),
                completion_tokens=len(stream.ids),
            )
            for row, stream, reason in zip(self.rows, self.streams, self.finish, strict=True)
        ]
