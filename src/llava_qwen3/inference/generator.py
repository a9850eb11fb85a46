"""Records in, text out, on either backend.

    generator = LlavaQwen3Generator.from_pretrained("checkpoint")              # PyTorch
    generator = LlavaQwen3Generator.from_pretrained("export", backend="onnx")  # onnxruntime, INT8 graphs
    generator.generate({"text": "<m1> What colour?", "multimodal_data": {"multimodal_embeddings": {"m1": [vector]}}})

A record holds "text" with placeholders, optional "images" (PIL images or files) and optional
"multimodal_data": {"multimodal_embeddings": {name: [items]}}, where an item is a tensor, an array, or a .npy or
.safetensors file holding one tensor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .backend import InferenceBackend
from .loading import load_backend
from .requests import GenerationRequest, GenerationSettings


class LlavaQwen3Generator:
    """Generates text for records holding text, images and precomputed embeddings, through an `InferenceBackend`."""

    def __init__(self, backend: InferenceBackend) -> None:
        self.backend = backend

    @classmethod
    def from_pretrained(cls, model: str | Path, backend: str = "torch", **options: Any) -> LlavaQwen3Generator:
        """A generator over `load_backend(model, backend, **options)`."""
        return cls(load_backend(model, backend, **options))

    def generate(self, records: dict | list[dict], max_new_tokens: int = 64, **settings: Any) -> str | list[str]:
        """The generated text for one record, or a list of texts for a list of records (run as one batch).

        `settings` are those of `GenerationSettings` (greedy by default); a bad record raises its ValueError.
        """
        single = isinstance(records, dict)
        batch = [records] if single else list(records)
        if not batch:
            raise ValueError("records is empty; pass a record or a non-empty list of records.")
        settings = GenerationSettings(max_new_tokens=max_new_tokens, **settings)
        generations = self.backend.generate([GenerationRequest(record, settings) for record in batch])
        for index, generation in enumerate(generations):
            if generation.error is not None:
                raise ValueError(f"record {index}: {generation.error}")
        texts = [generation.text for generation in generations]
        return texts[0] if single else texts
