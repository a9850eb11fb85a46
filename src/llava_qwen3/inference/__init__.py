"""Inference: one interface over the engines that generate text (the PyTorch model and the onnxruntime runner).

`load_backend(path, "torch" | "onnx")` gives an `InferenceBackend`; its `generate(requests)` decodes a batch of
`GenerationRequest`s, each with its own `GenerationSettings`, streaming hook and cancellation, into `Generation`s.
`LlavaQwen3Generator` is the records-in, text-out front over a backend. Serving and evaluation use this package.

Where torch is not installed the onnxruntime side (`onnx_runner`, `onnx_backend`) still imports.
"""

from .backend import InferenceBackend
from .generator import LlavaQwen3Generator
from .int8 import QUANTIZATIONS
from .loading import BACKENDS, load_backend
from .requests import FINISH_REASONS, Generation, GenerationRequest, GenerationSettings

__all__ = [
    "BACKENDS",
    "FINISH_REASONS",
    "Generation",
    "GenerationRequest",
    "GenerationSettings",
    "InferenceBackend",
    "LlavaQwen3Generator",
    "QUANTIZATIONS",
    "load_backend",
]
