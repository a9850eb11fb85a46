"""Choosing the next token from numpy logits the way transformers does (temperature, then top-k, then top-p), and
the checks transformers applies to those settings (`GenerationConfig.validate` and its logits warpers); the
end-of-sequence and padding defaults and the context limit, as `generate()` has them.

Both the onnxruntime runner's `generate()` and the per-request decoding of every backend use it, so a setting means
the same thing everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_max_new_tokens(max_new_tokens: Any) -> int:
    """`max_new_tokens` as an int, or a ValueError: it must be a positive int."""
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}.")
    return int(max_new_tokens)


def check_sampling(temperature: Any, top_k: Any, top_p: Any) -> None:
    """Raises a ValueError naming the first sampling setting transformers' warpers would refuse."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number when sampling, got {temperature!r}.")
    if not math.isfinite(temperature):
        raise ValueError(f"temperature must be finite, got {temperature!r}.")
    if not _is_int(top_k) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 keeps every token), got {top_k!r}.")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be a number in (0, 1], got {top_p!r}.")


def check_token_ids(name: str, token_ids: Iterable[Any], vocab_size: int | None = None) -> list[int]:
    """Token ids as a list of ints, or a ValueError naming `name`: each must lie in [0, vocab_size)."""
    token_ids = list(token_ids)
    for token_id in token_ids:
        if not _is_int(token_id) or token_id < 0 or (vocab_size is not None and token_id >= vocab_size):
            bound = f" and below the vocabulary size {vocab_size}" if vocab_size is not None else ""
            raise ValueError(f"{name} holds {token_id!r}; token ids must be ints >= 0{bound}.")
    return [int(token_id) for token_id in token_ids]


def stop_and_pad_ids(eos_token_id: Any, pad_token_id: Any) -> tuple[list[int], Any]:
    """A generation config's end-of-sequence ids as a list (it may hold one id, several or none) and the padding id,
    which defaults as transformers' `generate()` defaults it: to the first end-of-sequence id, else 0."""
    if eos_token_id is None:
        stops = []
    else:
        stops = list(eos_token_id) if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]
    return stops, pad_token_id if pad_token_id is not None else (stops or [0])[0]


def context_overflow(prompt_tokens: int, max_new_tokens: int, max_positions: int) -> str | None:
    """Why a prompt of `prompt_tokens` cannot get `max_new_tokens` more within the model's `max_positions`, or None."""
    if prompt_tokens + max_new_tokens <= max_positions:
        return None
    return (
        f"the prompt ({prompt_tokens} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the model's context of "
        f"{max_positions} tokens (max_position_embeddings); shorten the prompt or lower max_new_tokens."
    )


def next_tokens(
    logits: np.ndarray,
    do_sample: bool,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The next token of each row of `logits` `(batch, vocab)`: the argmax, or a draw after temperature, top-k and
    top-p (the smallest set of most likely tokens whose probability reaches `top_p`, at least one token)."""
    if not do_sample:
        return logits.argmax(axis=-1)
    logits = logits.astype(np.float64) / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = np.partition(logits, -top_k, axis=-1)[:, -top_k, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-probs, axis=-1)
        sorted_probs = np.take_along_axis(probs, order, axis=-1)
        drop_sorted = np.cumsum(sorted_probs, axis=-1) - sorted_probs >= top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        probs = np.where(drop, 0.0, probs)
        probs /= probs.sum(axis=-1, keepdims=True)
    draws = (rng or np.random.default_rng()).random((len(probs), 1))
    return np.minimum((np.cumsum(probs, axis=-1) < draws).sum(axis=-1), probs.shape[-1] - 1)
