"""Incremental detokenisation with stop sequences, one generated row at a time.

Generation produces token ids; clients want text deltas that never show part of a stop
sequence and never split a multi-byte character. ``TextStream`` re-decodes the generated ids
after each token (robust for byte-level BPE and WordPiece alike), cuts the text at the first
stop sequence, and holds back a tail that could still become one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

_REPLACEMENT = "\ufffd"  # what a decoder yields for an incomplete UTF-8 sequence


class TextStream:
    """The text of one generated row.

    Args:
        decode: token ids -> text (special tokens skipped).
        stop: stop sequences; the text ends just before the first one found.

    Example:
        >>> stream = TextStream(lambda ids: "".join(chr(i) for i in ids), stop=["\\n"])
        >>> stream.add(ord("a")), stream.add(ord("\\n")), stream.stopped, stream.text
        ('a', '', True, 'a')
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = [s for s in stop if s]
        self._holdback = max((len(s) for s in self._stop), default=1) - 1
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def add(self, token_id: int) -> str:
        """Append one token; return the text that is now safe to show (possibly empty)."""
        self.ids.append(token_id)
        full = self._decode(self.ids)
        cut = self._find_stop(full)
        if cut is not None:
            self.text = full[:cut]
            self.stopped = True
            return self._emit(len(self.text))
        self.text = full
        safe = len(full)
        while safe > self.emitted and full[safe - 1] == _REPLACEMENT:
            safe -= 1
        safe = min(safe, len(full) - self._partial_stop_len(full))
        return self._emit(safe)

    def finish(self) -> str:
        """Generation ended: whatever was held back is final now."""
        return self._emit(len(self.text))

    def _emit(self, end: int) -> str:
        if end <= self.emitted:
            return ""
        delta = self.text[self.emitted:end]
        self.emitted = end
        return delta

    def _find_stop(self, text: str) -> int | None:
        # Only the new part (plus a stop's length of overlap) can hold a new match.
        start = max(0, self.emitted - self._holdback)
        hits = [i for i in (text.find(s, start) for s in self._stop) if i >= 0]
        return min(hits) if hits else None

    def _partial_stop_len(self, text: str) -> int:
        """Length of the longest tail of ``text`` that is a proper prefix of a stop sequence."""
        best = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:size]):
                    best = size
                    break
        return best
