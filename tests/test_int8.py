"""INT8 linear layers for the PyTorch model (`quantize="int8"`): greedy answers of the demo model agree with fp32,
the option reaches the backend and both commands, and bad uses are refused."""

from __future__ import annotations

import copy

import pytest
import torch

from llava_qwen3.evaluation.cli import main as eval_main
from llava_qwen3.inference import load_backend
from llava_qwen3.inference.int8 import quantize_linear_layers_int8
from llava_qwen3.serving.cli import _backend_options, build_parser
from llava_qwen3.training.synthetic import QUESTIONS, draw_scene, random_scenes

pytestmark = pytest.mark.one_line  # quantization swaps the model's modules; no transformers-version-specific path


def greedy_answers(model, processor, scenes, question: str) -> list[list[int]]:
    """Each scene's greedy answer to `question`, up to and including its end-of-turn token."""
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": f"<image>\n{question}"}], add_generation_prompt=True
    )
    inputs = processor(images=[[draw_scene(s)] for s in scenes], text=[prompt] * len(scenes), return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False)[:, inputs["input_ids"].shape[1] :]
    stop = model.generation_config.eos_token_id
    stops = {stop} if isinstance(stop, int) else set(stop)
    answers = []
    for row in output.tolist():
        ends = [index for index, token in enumerate(row) if token in stops]
        answers.append(row[: ends[0] + 1] if ends else row)
    return answers


def test_int8_greedy_tokens_agree_with_fp32_on_the_demo_model(demo_model):
    _, model, processor = demo_model
    quantized = quantize_linear_layers_int8(copy.deepcopy(model))
    assert not any(type(module) is torch.nn.Linear for module in quantized.modules())
    scenes = random_scenes(20, "held_out", seed=3)
    same = total = 0
    for question in QUESTIONS.values():
        pairs = zip(
            greedy_answers(model, processor, scenes, question),
            greedy_answers(quantized, processor, scenes, question),
            strict=True,
        )
        for expected, actual in pairs:
            # Position by position over the longer answer: a token past the shorter one's end counts as different.
            same += sum(a == b for a, b in zip(expected, actual, strict=False))
            total += max(len(expected), len(actual))
    print(f"INT8 vs fp32 greedy answer tokens: {same} of {total} agree ({same / total:.3f})")
    assert total >= 3 * 20 * 2
    assert same / total >= 0.9


def test_the_backend_and_both_commands_take_the_option(demo_model, tmp_path, capsys):
    folder, _, _ = demo_model
    backend = load_backend(folder, quantize="int8")
    assert backend.device == "cpu"
    assert not any(type(module) is torch.nn.Linear for module in backend.model.modules())
    args = build_parser().parse_args(["--model", str(folder), "--quantize", "int8"])
    assert _backend_options(args) == {"quantize": "int8", "prefix_cache_bytes": 256 * 2**20}
    onnx_args = build_parser().parse_args(["--model", str(folder), "--backend", "onnx", "--quantize", "int8"])
    with pytest.raises(ValueError, match="--quantize is for the torch backend"):
        _backend_options(onnx_args)
    with pytest.raises(SystemExit):
        eval_main([str(folder), "data.json", "--backend", "onnx", "--quantize", "int8"])
    assert "--quantize is for the torch backend" in capsys.readouterr().err


def test_unknown_quantizations_and_non_float32_models_are_refused(demo_model):
    folder, model, _ = demo_model
    with pytest.raises(ValueError, match=r"quantize='int4' is unknown; expected one of int8"):
        load_backend(folder, quantize="int4")
    with pytest.raises(ValueError, match="float32"):
        quantize_linear_layers_int8(copy.deepcopy(model).to(torch.bfloat16))
