"""What a generation request asks for and gets: sampling parameters, rows, results.

Plain data shared by the OpenAI routes (which build them from a request) and the generative
model (which runs them); kept free of torch so the HTTP layer imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    """Parameters one ``generate()`` call applies to all its rows.

    ``temperature`` <= 0 or absent means greedy decoding (as KServe). ``seed`` makes sampling
    reproducible; a seeded sampled request never shares a batch, since the random stream a row
    sees would otherwise depend on its neighbours.
    """

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()

    @property
    def do_sample(self) -> bool:
        return self.temperature is not None and self.temperature > 0

    def batch_key(self, request_id: str) -> Hashable:
        """Requests with equal keys can share one ``generate()`` call."""
        if self.do_sample and self.seed is not None:
            return ("seeded", request_id)
        if not self.do_sample:
            return ("greedy", self.repetition_penalty, self.logit_bias)
        return ("sample", self.temperature, self.top_p, self.top_k, self.repetition_penalty, self.logit_bias)


@dataclass
class GenerationRow:
    """One prompt to continue. ``cancelled`` may be set from another thread to drop the row early."""

    prompt_ids: list[int]
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    on_delta: Callable[[str], None] | None = field(default=None, repr=False)
    cancelled: bool = False


@dataclass(frozen=True)
class GenerationResult:
    """The text generated for one row and why it ended (``stop`` or ``length``)."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
