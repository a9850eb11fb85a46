"""Reusing the KV cache of earlier prompts in the PyTorch backend.

A prompt that begins the way an earlier request's prompt and answer did (the next turn of a chat, a second question
about the same picture) starts from that request's KV cache instead of computing its beginning again. The cache is
keyed by the content of each position: the token id, or, at a placeholder, a digest of the picture or embedding that
the placeholder stands for (every picture gives the same placeholder ids). A lookup takes the stored prefix with the
longest common beginning, if it is at least `MIN_REUSE_TOKENS` long (a shared chat header alone is not worth a
lookup), never ending inside a picture's or embedding's placeholders. Prefixes are dropped least recently used first
beyond a byte budget.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import BatchFeature

from ..processing import LlavaQwen3Processor

MIN_REUSE_TOKENS = 16  # a shorter shared beginning is not reused


def _digest(item: torch.Tensor) -> int:
    """A negative key for a placeholder position (token ids are never negative), the same for equal inputs."""
    data = item.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return -1 - int.from_bytes(hashlib.blake2b(data, digest_size=7).digest(), "little")


@dataclass
class RowPrompt:
    """One prompt of a padded batch: its tokens without padding, its inputs, where each input's placeholders begin,
    and the content key of each position."""

    input_ids: torch.Tensor  # (length,)
    key: np.ndarray  # (length,) int64: token ids, placeholder positions replaced by their input's digest
    images: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (start, pixels) in placeholder order
    embeddings: dict[str, list[tuple[int, torch.Tensor]]] = field(default_factory=dict)  # by modality, the same

    def inputs_between(self, start: int, end: int) -> tuple[list[torch.Tensor], dict[str, list[torch.Tensor]]]:
        """The pictures' pixel values and the modality embeddings whose placeholders begin in `[start, end)`."""
        images = [pixels for begin, pixels in self.images if start <= begin < end]
        embeddings = {
            name: [item for begin, item in items if start <= begin < end] for name, items in self.embeddings.items()
        }
        return images, {name: items for name, items in embeddings.items() if items}


def row_prompts(rows: list[BatchFeature], processor: LlavaQwen3Processor) -> list[RowPrompt]:
    """Each encoded record (`InferenceBackend.encode`) as a `RowPrompt`: its inputs and where their placeholders begin,
    as the processor places them."""
    prompts = []
    for row in rows:
        ids = torch.as_tensor(row["input_ids"][0])
        images = list(row.get("pixel_values") if row.get("pixel_values") is not None else [])
        embeddings = {name: list(items) for name, items in (row.get("modality_embeds") or {}).items()}
        lengths = processor.placeholder_lengths(len(images), embeddings)
        starts = processor.placeholder_starts(ids.tolist(), lengths)
        prompt = RowPrompt(ids, ids.numpy().astype(np.int64))
        for start, length, pixels in zip(
            starts[processor.image_token], lengths[processor.image_token], images, strict=True
        ):
            prompt.key[start : start + length] = _digest(pixels)
            prompt.images.append((start, pixels))
        for name, items in embeddings.items():
            token = processor.modality_tokens[name]
            for start, length, item in zip(starts[token], lengths[token], items, strict=True):
                prompt.key[start : start + length] = _digest(item)
                prompt.embeddings.setdefault(name, []).append((start, item))
        prompts.append(prompt)
    return prompts


@dataclass
class Prefix:
    """A stored KV cache: the content key of its positions and each layer's keys and values `(heads, length, dim)`."""

    key: np.ndarray
    layers: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def nbytes(self) -> int:
        return sum(keys.nbytes + values.nbytes for keys, values in self.layers)


def checked_budget(max_bytes: int) -> int:
    """`max_bytes` if a prefix cache can keep that budget (a whole number of bytes, 0 for none), else a ValueError."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"prefix_cache_bytes must be a whole number of bytes >= 0, got {max_bytes!r}.")
    return max_bytes


class PrefixCache:
    """Stored prefixes, least recently used dropped first beyond `max_bytes`. Not thread-safe: one backend's worker
    uses it."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = checked_budget(max_bytes)
        self.nbytes = 0
        self._prefixes: OrderedDict[int, Prefix] = OrderedDict()
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._prefixes)

    def longest(self, key: np.ndarray, limit: int) -> tuple[Prefix | None, int]:
        """The stored prefix sharing the longest beginning with `key` and how many positions of it to reuse (at most
        `limit`, not ending inside a placeholder run); `(None, 0)` when none shares at least `MIN_REUSE_TOKENS`."""
        best, best_length = None, 0
        for prefix_id, prefix in self._prefixes.items():
            length = _common_length(prefix.key, key)
            if length > best_length:
                best, best_length, best_id = prefix, length, prefix_id
        length = cut_at_or_before(key, min(best_length, limit))
        if best is None or length < MIN_REUSE_TOKENS:
            return None, 0
        self._prefixes.move_to_end(best_id)
        return best, length

    def put(self, key: np.ndarray, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Stores a prefix (copies of the given tensors), dropping the least recently used beyond the budget."""
        prefix = Prefix(key.copy(), [(keys.clone(), values.clone()) for keys, values in layers])
        if prefix.nbytes > self.max_bytes:
            return
        for prefix_id, stored in list(self._prefixes.items()):  # superseded: the new one begins with all of it
            if _common_length(stored.key, key) == len(stored.key):
                self.nbytes -= self._prefixes.pop(prefix_id).nbytes
        self._prefixes[self._next_id] = prefix
        self._next_id += 1
        self.nbytes += prefix.nbytes
        while self.nbytes > self.max_bytes:
            _, dropped = self._prefixes.popitem(last=False)
            self.nbytes -= dropped.nbytes


def cut_at_or_before(key: np.ndarray, position: int) -> int:
    """The last position at or before `position` where a prompt with this content key can be split: not inside a
    placeholder run, whose features cannot be computed in part."""
    while 0 < position < len(key) and key[position] < 0 and key[position - 1] == key[position]:
        position -= 1
    return position


def _common_length(stored: np.ndarray, key: np.ndarray) -> int:
    length = min(len(stored), len(key))
    differs = np.flatnonzero(stored[:length] != key[:length])
    return int(differs[0]) if len(differs) else length
