"""What a request asks of the decoder: its parameters as the inference interface's `GenerationSettings`, within the
server's limits. Every endpoint goes through `generation_settings`, so a parameter means the same everywhere."""

from __future__ import annotations

from ..inference import GenerationSettings
from .errors import ApiError
from .limits import ServerLimits


def generation_settings(
    limits: ServerLimits,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    seed: int | None = None,
    stop: str | list[str] | None = None,
    max_tokens_param: str = "max_tokens",
) -> GenerationSettings:
    """Greedy decoding unless `temperature` > 0; `max_tokens` defaults to `limits.default_max_tokens` and may not
    exceed `limits.max_tokens` (a 400 naming `max_tokens_param`)."""
    max_new_tokens = limits.default_max_tokens if max_tokens is None else max_tokens
    if max_new_tokens > limits.max_tokens:
        raise ApiError(
            400,
            f"{max_tokens_param} is {max_new_tokens}; this server generates at most {limits.max_tokens} tokens per "
            "request (max_tokens limit).",
            param=max_tokens_param,
            code="max_tokens_too_large",
        )
    sampling = temperature is not None and temperature > 0
    try:
        return GenerationSettings(
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else 1.0,
            top_k=top_k or 0,
            top_p=1.0 if top_p is None else top_p,
            seed=seed,
            stop=() if stop is None else stop,
        )
    except ValueError as error:  # the inference interface's own checks, should a value slip past the schema
        raise ApiError(400, str(error), code="invalid_value") from None
