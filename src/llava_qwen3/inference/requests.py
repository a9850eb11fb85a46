"""What a backend is asked to generate and what it gives back: one request per prompt, each with its own settings.

A request holds a record (`{"text", "images", "multimodal_data"}`, see `records`), its generation settings, and two
optional hooks: `on_text(delta)` receives the text as it is generated, and `is_cancelled()` is asked at every step
so a request nobody waits for any more stops consuming compute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transformers import BatchFeature

from .sampling import check_max_new_tokens, check_sampling

FINISH_REASONS = ("stop", "length", "cancelled", "error")


@dataclass(frozen=True)
class GenerationSettings:
    """Per-request decoding settings, checked when made (a ValueError names the bad one).

    `do_sample=False` is greedy decoding; with sampling, `temperature`, then `top_k` (0 keeps every token), then
    `top_p` shape the distribution, and `seed` makes the draw repeatable. Generation stops at the model's stop tokens,
    at the first of the `stop` strings (which is left out of the text), or after `max_new_tokens`.
    """

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_max_new_tokens(self.max_new_tokens)
        if not isinstance(self.do_sample, bool):
            raise ValueError(f"do_sample must be true or false, got {self.do_sample!r}.")
        if self.do_sample:
            check_sampling(self.temperature, self.top_k, self.top_p)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an int, got {self.seed!r}.")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if not all(isinstance(item, str) and item for item in stop):
            raise ValueError(f"stop must be non-empty strings, got {self.stop!r}.")
        object.__setattr__(self, "stop", stop)


@dataclass
class GenerationRequest:
    """One prompt to generate for: a record, its settings, the optional streaming and cancellation hooks, and the
    record's model inputs where the caller has made them already (`InferenceBackend.encode`)."""

    record: dict[str, Any]
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    on_text: Callable[[str], None] | None = None
    is_cancelled: Callable[[], bool] | None = None
    encoded: BatchFeature | None = None


@dataclass
class Generation:
    """The outcome of one request: its text and tokens, why it ended, and the token counts.

    `finish_reason` is "stop" (a stop token or string), "length" (`max_new_tokens` reached), "cancelled", or "error"
    (the request itself was bad: `error` says why; the other requests of its batch are unaffected).
    `cached_tokens` of the `prompt_tokens` were read from the backend's prefix cache instead of computed.
    """

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"
    prompt_tokens: int = 0
    error: str | None = None
    cached_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)
