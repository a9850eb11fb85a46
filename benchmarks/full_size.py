"""What the benchmarks share: the public sizes of Qwen3-0.6B and the vision towers (written from their published
configs; nothing is downloaded), a streamer that stamps each token, the torch backend's timing, the machine's copy
bandwidth, a process's peak resident memory, and a fresh Python without torch. Importable without torch."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from transformers import BatchFeature

from llava_qwen3.inference import GenerationRequest, GenerationSettings

if TYPE_CHECKING:
    from llava_qwen3.inference.torch_backend import TorchBackend

# Runs the script named by its first argument as `python SCRIPT ARGS...` would, with torch made unimportable first:
# transformers decides at its own import whether torch is installed (importlib's find_spec, which a None entry in
# sys.modules answers with "not found"), and where it is, imports it with its configuration classes.
WITHOUT_TORCH = (
    "import os, runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
    "sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0])); runpy.run_path(sys.argv[0], run_name='__main__')"
)

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


def backend_requests(inputs: dict, new_tokens: int) -> list[GenerationRequest]:
    """A request for each row of `inputs` (given as its encoded record), for `new_tokens` greedy tokens."""
    settings = GenerationSettings(max_new_tokens=new_tokens)
    return [
        GenerationRequest(
            {}, settings, encoded=BatchFeature({name: value[row : row + 1] for name, value in inputs.items()})
        )
        for row in range(len(inputs["input_ids"]))
    ]


def backend_seconds(backend: TorchBackend, inputs: dict, new_tokens: int) -> float:
    """Wall time of one batch through the backend, a request for each row of `inputs`."""
    requests = backend_requests(inputs, new_tokens)
    start = time.perf_counter()
    backend.generate(requests)
    return time.perf_counter() - start


def backend_tokens(backend: TorchBackend, inputs: dict, new_tokens: int) -> list[list[int]]:
    """The greedy tokens the backend answers each row of `inputs` with."""
    return [generation.token_ids for generation in backend.generate(backend_requests(inputs, new_tokens))]


def backend_decode(backend: TorchBackend, inputs: dict, new_tokens: int) -> tuple[float, float]:
    """The backend's decode rate, (new_tokens - 1) over the difference between a request for new_tokens tokens and one
    for 1, and that one-token request's wall time (its first token)."""
    first_token_s = backend_seconds(backend, inputs, 1)
    return (new_tokens - 1) / (backend_seconds(backend, inputs, new_tokens) - first_token_s), first_token_s


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


def peak_resident_bytes(pid: int | None = None) -> int:
    """The largest resident set this process (or process `pid`) has had so far: Linux's VmHWM. Not `getrusage`'s
    ru_maxrss, which Linux carries across exec from the parent's resident set at the fork (a parent that built a
    full-size checkpoint would give every child its own floor)."""
    status = Path("/proc") / ("self" if pid is None else str(pid)) / "status"
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM in {status}")


def run_without_torch(script: Path, arguments: list[str]) -> None:
    """Runs `script` with `arguments` in a fresh Python in which torch cannot be imported, as where only onnxruntime
    is installed: an ONNX export's deployment, whose resident memory then holds no torch (about 0.3 GB here)."""
    subprocess.run([sys.executable, "-c", WITHOUT_TORCH, str(script), *arguments], check=True)
