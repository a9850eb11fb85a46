"""The eval command on the demo models: the held-out shapes accuracy the training test measures, on PyTorch and on the
ONNX fp32 and INT8 exports; caption metrics of a captioning demo far above a blank-picture control."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from llava_qwen3.evaluation import evaluate
from llava_qwen3.inference import load_backend
from llava_qwen3.training.shapes_recipe import shapes_accuracy, train_on_shapes
from llava_qwen3.training.synthetic import QUESTIONS, write_dataset

pytestmark = [pytest.mark.slow, pytest.mark.one_line]  # evaluation drives the inference backends only


def test_held_out_accuracy_equals_the_training_tests_on_torch_and_onnx_fp32_and_int8_costs_little(
    demo_model, demo_onnx_export, tmp_path
):
    folder, model, processor = demo_model
    # The pictures shapes_accuracy draws for the held-out split (60 scenes, seed 7), written as a record file.
    data = write_dataset(tmp_path / "held_out", number=60, split="held_out", seed=7)
    measured = shapes_accuracy(model, processor, "held_out")
    reports = {
        "torch": evaluate(load_backend(folder), data, tmp_path / "torch", progress=False),
        "torch int8": evaluate(load_backend(folder, quantize="int8"), data, tmp_path / "torch-int8", progress=False),
        "onnx fp32": evaluate(
            load_backend(demo_onnx_export, "onnx", variant="fp32"), data, tmp_path / "fp32", progress=False
        ),
        "onnx int8": evaluate(
            load_backend(demo_onnx_export, "onnx", variant="quantized"), data, tmp_path / "int8", progress=False
        ),
    }
    for name, report in reports.items():
        print(name, report.metrics)
    torch_metrics = reports["torch"].metrics
    assert {attribute: torch_metrics[f"accuracy/{attribute}"] for attribute in QUESTIONS} == measured
    assert reports["torch"].scored == reports["torch"].records == 180
    assert reports["onnx fp32"].metrics == torch_metrics  # fp32 graphs give PyTorch's greedy tokens
    assert reports["onnx int8"].metrics["accuracy"] >= torch_metrics["accuracy"] - 0.1
    assert reports["torch int8"].metrics["accuracy"] >= torch_metrics["accuracy"] - 0.1


@pytest.mark.needs("java")  # pycocoevalcap's PTB tokenizer and METEOR
def test_caption_metrics_of_the_captioning_demo_are_far_above_a_blank_picture_control(tmp_path):
    train_on_shapes(output=tmp_path / "captioner", tasks=("caption",))
    data = write_dataset(tmp_path / "captions", number=40, split="train", seed=7, tasks=("caption",))
    # The control: the same records, every picture replaced by a white one.
    blank = tmp_path / "blank"
    shutil.copytree(data.parent / "images", blank / "images")
    for path in (blank / "images").iterdir():
        Image.new("RGB", Image.open(path).size, "white").save(path)
    backend = load_backend(tmp_path / "captioner")
    pictures = evaluate(backend, data, tmp_path / "pictures", progress=False).metrics
    control = evaluate(backend, data, tmp_path / "control", image_folder=blank, progress=False).metrics
    print(f"captions of the pictures: {pictures}\ncaptions of blank pictures: {control}")
    # Measured: BLEU-4 1.00 and CIDEr-D 10.0 (every caption right) against 0.25 and 1.61 for blank pictures.
    assert pictures["Bleu_4"] >= 0.8 and pictures["CIDEr"] >= 5.0
    assert pictures["Bleu_4"] >= control["Bleu_4"] + 0.5 and pictures["CIDEr"] >= 4 * control["CIDEr"]
