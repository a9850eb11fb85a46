"""Per-request control of a batch being decoded: each row keeps its own sampling settings, seed, token limit, stop
strings, streamed text and cancellation, inside one padded batch.

A backend runs its own generation loop (transformers' `generate`, or the onnxruntime runner's) greedily and calls
two hooks at every step: a logits processor that draws each row's token with that row's settings and leaves it the
only candidate (`forced_scores` on numpy scores; the PyTorch backend does the same with torch's ops on the device),
and `advance` (as a stopping criterion: it records the new tokens and says which rows are done).

The text grows by one token's piece at a time (the `tokenizers` library's `DecodeStream`, which holds back the bytes
of a character split across tokens), and stop strings are looked for in the new text only: the cost of a step does
not grow with the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from tokenizers.decoders import DecodeStream

from .requests import Generation, GenerationRequest
from .sampling import next_tokens

logger = logging.getLogger(__name__)


class _Row:
    """One request's state while its batch decodes."""

    def __init__(self, request: GenerationRequest) -> None:
        self.request = request
        self.settings = request.settings
        self.rng = np.random.default_rng(self.settings.seed)
        self.token_ids: list[int] = []
        self.text = ""
        self.text_stream = DecodeStream(skip_special_tokens=True)
        self.undecoded: list[int] = []  # the tokens whose bytes the stream holds back (a character not complete yet)
        self.longest_stop = max((len(stop) for stop in self.settings.stop), default=0)
        self.sent = 0  # characters of `text` already given to `on_text`
        self.finish_reason: str | None = None

    def add_token(self, token: int, tokenizer: Any) -> None:
        """Appends a generated token and its text; a stop string in the text ends it there (and the row)."""
        self.token_ids.append(token)
        piece = self.text_stream.step(tokenizer.backend_tokenizer, token)
        if piece is None:
            self.undecoded.append(token)
            return
        self.undecoded.clear()
        searched = max(len(self.text) - self.longest_stop + 1, 0)  # a stop string may begin in the earlier text
        self.text += piece
        cut = min((at for stop in self.settings.stop if (at := self.text.find(stop, searched)) >= 0), default=-1)
        if cut >= 0:
            self.text, self.finish_reason = self.text[:cut], "stop"

    def finish(self, reason: str, tokenizer: Any) -> None:
        """Ends the row; bytes the stream still holds back become text as decoding them alone gives it."""
        if self.undecoded:
            self.text += tokenizer.decode(self.undecoded, skip_special_tokens=True)
            self.undecoded.clear()
        self.finish_reason = reason

    def held_back(self) -> int:
        """How many trailing characters may still change: the beginning of a stop string."""
        for length in range(self.longest_stop - 1, 0, -1):
            if any(stop.startswith(self.text[-length:]) for stop in self.settings.stop):
                return length
        return 0

    def stream(self) -> None:
        """Gives `on_text` the text that can no longer change; all of it once the row is finished."""
        if self.request.on_text is None:
            return
        end = len(self.text) if self.finish_reason is not None else len(self.text) - self.held_back()
        if end > self.sent:
            delta, self.sent = self.text[self.sent : end], end
            try:
                self.request.on_text(delta)
            except Exception:  # a consumer that fails (a client gone) must not fail the other rows
                logger.warning("the text consumer of a request failed; cancelling that request", exc_info=True)
                self.finish_reason = "cancelled"

    def cancelled(self) -> bool:
        check = self.request.is_cancelled
        try:
            return check is not None and bool(check())
        except Exception:
            logger.warning("is_cancelled of a request failed; cancelling that request", exc_info=True)
            return True


class BatchDecoding:
    """The state of one batch of requests being decoded; see the module docstring for how backends drive it."""

    def __init__(
        self, requests: Sequence[GenerationRequest], tokenizer: Any, stop_token_ids: Sequence[int], pad_token_id: int
    ) -> None:
        self.rows = [_Row(request) for request in requests]
        self.tokenizer = tokenizer
        self.stop_token_ids = set(stop_token_ids)
        self.pad_token_id = pad_token_id
        self.greedy = np.array([not row.settings.do_sample for row in self.rows])

    @property
    def max_new_tokens(self) -> int:
        return max(row.settings.max_new_tokens for row in self.rows)

    @property
    def done(self) -> np.ndarray:
        return np.array([row.finish_reason is not None for row in self.rows])

    def choose(self, scores: np.ndarray) -> np.ndarray:
        """The next token of each row `(batch,)` from its scores `(batch, vocab)`; finished rows get the pad token."""
        tokens = scores.argmax(axis=-1)
        for index, row in enumerate(self.rows):
            if row.finish_reason is not None:
                tokens[index] = self.pad_token_id
            elif not self.greedy[index]:
                settings = row.settings
                tokens[index] = next_tokens(
                    scores[index : index + 1], True, settings.temperature, settings.top_k, settings.top_p, row.rng
                )[0]
        return tokens

    def forced_scores(self, scores: np.ndarray) -> np.ndarray:
        """Scores that leave each row's chosen token as its only candidate, so a greedy loop takes it."""
        forced = np.full(scores.shape, -np.inf, dtype=np.float32)
        forced[np.arange(len(scores)), self.choose(scores)] = 0.0
        return forced

    def advance(self, tokens: np.ndarray) -> np.ndarray:
        """Records each live row's new token; returns which rows are done (stop token or string, limit, cancel)."""
        for row, token in zip(self.rows, tokens.tolist(), strict=True):
            if row.finish_reason is not None:
                continue
            if token in self.stop_token_ids:
                row.finish("stop", self.tokenizer)
            else:
                row.add_token(token, self.tokenizer)
                if row.finish_reason is None and len(row.token_ids) >= row.settings.max_new_tokens:
                    row.finish("length", self.tokenizer)
            if row.finish_reason is None and row.cancelled():
                row.finish("cancelled", self.tokenizer)
            row.stream()
        return self.done

    def results(self, prompt_tokens: Sequence[int], cached_tokens: Sequence[int]) -> list[Generation]:
        """One `Generation` per request; a row the loop left unfinished ran out of tokens."""
        generations = []
        for row, prompt_length, cached in zip(self.rows, prompt_tokens, cached_tokens, strict=True):
            if row.finish_reason is None:
                row.finish("length", self.tokenizer)
                row.stream()
            generations.append(
                Generation(row.text, row.token_ids, row.finish_reason, int(prompt_length), cached_tokens=int(cached))
            )
        return generations
