"""Shared fixtures: tiny checkpoints with random weights and their ONNX export; the `needs` marker. Helpers live in
helpers.py."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import OPTIONAL_PARTS, REQUIRE_OPTIONAL, require

from llava_qwen3.conversion import build_tiny_checkpoint

# Tests never reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
torch.set_num_threads(2)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"needs(part): the test needs an optional part, one of {', '.join(OPTIONAL_PARTS)} (helpers.OPTIONAL_PARTS): "
        f"skipped with how to get it where the part is missing, failed where {REQUIRE_OPTIONAL}=1",
    )


@pytest.hookimpl(tryfirst=True)  # before the fixtures: a missing browser should not first cost a trained model
def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs"):
        require(*marker.args)


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


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory):
    """(folder, model, processor) of the demo model: the tiny model trained from scratch on the synthetic shapes
    (the same recipe as `llava-qwen3-demo`), trained once per session."""
    from llava_qwen3.training.shapes_recipe import train_on_shapes

    folder = tmp_path_factory.mktemp("demo") / "checkpoint"
    model, processor = train_on_shapes(output=folder)
    return folder, model, processor


@pytest.fixture(scope="session")
def demo_onnx_export(demo_model, tmp_path_factory):
    """The demo model's ONNX export folder: fp32 and INT8 ("quantized") graphs."""
    from llava_qwen3.conversion.export_onnx import export_onnx

    _, model, processor = demo_model
    folder = tmp_path_factory.mktemp("demo-onnx") / "export"
    return export_onnx(model, folder, processor=processor, quantize=("quantized",))
