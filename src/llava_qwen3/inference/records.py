"""Records: `{"text" or "conversations", "images", "multimodal_data": {"multimodal_embeddings": {name: [items]}}}`.

An embedding item is a tensor, an array, or a `.npy` / `.safetensors` file holding one tensor; this module turns
items into tensors for both generation and training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file


def load_embedding(item: Any) -> torch.Tensor:
    """A tensor from a tensor, an array, or a .npy / .safetensors file holding exactly one tensor."""
    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_file():
            raise ValueError(f"embedding file {path} does not exist.")
        if path.suffix == ".npy":
            return torch.from_numpy(np.load(path))
        if path.suffix == ".safetensors":
            tensors = load_file(path)
            if len(tensors) != 1:
                raise ValueError(f"{path} holds {len(tensors)} tensors ({', '.join(tensors)}); expected exactly one.")
            return next(iter(tensors.values()))
        raise ValueError(f"embedding file {path} is neither .npy nor .safetensors.")
    return torch.as_tensor(item)


def record_embeddings(record: dict[str, Any]) -> dict[str, list[torch.Tensor]]:
    """The record's embeddings by modality name, loaded."""
    embeddings = (record.get("multimodal_data") or {}).get("multimodal_embeddings") or {}
    return {name: [load_embedding(item) for item in items] for name, items in embeddings.items()}


def with_loaded_embeddings(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its embedding items loaded as tensors."""
    data = record.get("multimodal_data") or {}
    return {**record, "multimodal_data": {**data, "multimodal_embeddings": record_embeddings(record)}}
