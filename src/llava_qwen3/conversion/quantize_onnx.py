"""Quantised variants of an ONNX export, made with onnxruntime's own quantisers and recorded in the folder.

- `quantized` (transformers.js' "q8"): `quantize_dynamic` on MatMul and Gather weights, unsigned 8-bit, one scale
  per output channel, activations quantised per call. Signed weights without `reduce_range` lose accuracy on CPUs
  without VNNI (AVX2's u8 x s8 multiply-add saturates); unsigned ones do not (docs/onnx.md has the figures).
- `q4`: `MatMulNBits`, 4-bit symmetric blocks of 32 with int8 activations (accuracy level 4): smaller and faster,
  less accurate; embeddings stay 8-bit.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
from onnxruntime.quantization import QuantType, quantize_dynamic

from ..inference.onnx_layout import GRAPHS, QUANTIZATION_RECORD, graph_path, save_graph

QUANTIZATIONS: dict[str, dict[str, Any]] = {
    "quantized": {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "op_types": ["MatMul", "Gather"],
        "weight_type": "QUInt8",
        "per_channel": True,
        "reduce_range": False,
    },
    "q4": {
        "method": "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer",
        "op_types": ["MatMul"],
        "bits": 4,
        "block_size": 32,
        "is_symmetric": True,
        "accuracy_level": 4,
        "embeddings": "quantized",
    },
}


def _quantize_dynamic(source: Path, settings: dict[str, Any]) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "quantized.onnx"
        quantize_dynamic(
            source,
            target,
            op_types_to_quantize=settings["op_types"],
            weight_type=QuantType[settings["weight_type"]],
            per_channel=settings["per_channel"],
            reduce_range=settings["reduce_range"],
            use_external_data_format=True,  # any size; save_graph writes the layout asked for
            extra_options={"MatMulConstBOnly": True},
        )
        return onnx.load(target)


def _quantize_nbits(source: Path, settings: dict[str, Any]) -> onnx.ModelProto:
    # Importing this module calls logging.basicConfig(level=INFO) on the root logger; keep the caller's logging.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    root.handlers[:] = handlers
    root.setLevel(level)
    quantizer = MatMulNBitsQuantizer(
        onnx.load(source),
        bits=settings["bits"],
        block_size=settings["block_size"],
        is_symmetric=settings["is_symmetric"],
        accuracy_level=settings["accuracy_level"],
        op_types_to_quantize=tuple(settings["op_types"]),
    )
    quantizer.process()
    return quantizer.model.model


def quantize_graph(source: Path, variant: str) -> onnx.ModelProto:
    """The `variant` of the float32 graph at `source`."""
    settings = QUANTIZATIONS[variant]
    if source.name.startswith("embed_tokens") and "embeddings" in settings:
        settings = QUANTIZATIONS[settings["embeddings"]]
    if settings["method"].endswith("quantize_dynamic"):
        return _quantize_dynamic(source, settings)
    return _quantize_nbits(source, settings)


def quantize_export(folder: str | Path, variant: str, external_data: bool = True) -> Path:
    """Adds `variant` of each graph to an export folder (weights in `<file>.onnx_data` unless `external_data` is
    False) and records its settings; returns the record's path."""
    folder = Path(folder)
    if variant not in QUANTIZATIONS:
        raise ValueError(f"quantisation {variant!r} is unknown; expected one of {', '.join(QUANTIZATIONS)}.")
    for graph in GRAPHS:
        source = graph_path(folder, graph, "fp32")
        if not source.is_file():
            raise ValueError(f"{source} is missing: quantise a complete float32 export.")
        save_graph(quantize_graph(source, variant), graph_path(folder, graph, variant), external_data)
    record_path = folder / "onnx" / QUANTIZATION_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record[variant] = {
        **QUANTIZATIONS[variant],
        "onnxruntime": onnxruntime.__version__,
        "files": [graph_path(folder, graph, variant).name for graph in GRAPHS],
    }
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record_path
