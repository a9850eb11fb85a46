"""What the benchmarks share: the public sizes of Qwen3-0.6B and the vision towers (written from their published
configs; nothing is downloaded), a streamer that stamps each token, and the machine's copy bandwidth."""

from __future__ import annotations

import time

import numpy as np

QWEN3_0_6B = {
    "model_type": "qwen3",
    "vocab_size": 151936,
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "rope_theta": 1_000_000,
    "tie_word_embeddings": True,
}
CLIP_VIT_B_32 = {
    "model_type": "clip_vision_model",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 32,
}
SIGLIP_BASE_PATCH16_224 = {
    "model_type": "siglip_vision_model",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 16,
}


class TokenClock:
    """A streamer that stamps each put: the first is the prompt, the rest are generated tokens."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def put(self, value: object) -> None:
        self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass


def copy_bandwidth() -> float:
    """Bytes per second moved by a large numpy copy (read plus write), the best of five."""
    source = np.ones(256 * 2**20, dtype=np.float32)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best
