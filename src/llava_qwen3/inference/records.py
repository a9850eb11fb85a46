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

from ..modeling.configuration_llava_qwen3 import embedding_shape_error
from ..processing import record_embeddings, with_record_embeddings


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


def loaded_embeddings(record: dict[str, Any]) -> dict[str, list[torch.Tensor]]:
    """The record's embeddings by modality name, loaded."""
    return {name: [load_embedding(item) for item in items] for name, items in record_embeddings(record).items()}


def check_embedding_shapes(record: dict[str, Any], modalities: dict[str, dict[str, Any]]) -> None:
    """A ValueError naming the first loaded embedding item a model with `modalities` (its config's) cannot take: each
    must be `(input_dim,)` or `(n, input_dim)` of its modality. Checked while the record is processed, so a wrong item
    fails its own request rather than the batch it would be decoded in."""
    for name, items in loaded_embeddings(record).items():
        input_dim = (modalities.get(name) or {}).get("input_dim")
        for index, item in enumerate(items):
            error = None if input_dim is None else embedding_shape_error(name, index, tuple(item.shape), input_dim)
            if error:
                raise ValueError(error)


def with_loaded_embeddings(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its embedding items loaded as tensors."""
    return with_record_embeddings(record, loaded_embeddings(record))
