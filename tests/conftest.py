"""Shared fixtures: tiny checkpoints with random weights and their ONNX export. Helpers live in helpers.py."""

from __future__ import annotations

import os

import pytest
import torch

from llava_qwen3.conversion import build_tiny_checkpoint

# Tests never reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
torch.set_num_threads(2)


@pytest.fixture(scope="session", params=["clip", "siglip"])
def tiny(request, tmp_path_factory):
    """(folder, model, processor) of a tiny random checkpoint, once with a CLIP and once with a SigLIP tower."""
    folder = tmp_path_factory.mktemp(f"tiny-{request.param}")
    model, processor = build_tiny_checkpoint(folder, vision=request.param)
    return folder, model, processor


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-clip")
    model, processor = build_tiny_checkpoint(folder, vision="clip")
    return folder, model, processor


@pytest.fixture(scope="session")
def onnx_export(tiny_clip, tmp_path_factory):
    """(export folder, torch model, processor): fp32, INT8 ("quantized") and q4 graphs of the tiny CLIP model."""
    from llava_qwen3.conversion.export_onnx import export_onnx

    _, model, processor = tiny_clip
    folder = tmp_path_factory.mktemp("onnx") / "export"
    export_onnx(model, folder, processor=processor, quantize=("quantized", "q4"))
    return folder, model, processor
