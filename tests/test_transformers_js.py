"""The ONNX export loads in transformers.js (npm @huggingface/transformers, in Node) and generates PyTorch's tokens."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import draw_image, user_prompt

from llava_qwen3.conversion.export_onnx import export_onnx
from llava_qwen3.inference.onnx_runner import LlavaQwen3OnnxModel

JS_DIR = Path(__file__).parent / "js"
IMAGES = [draw_image(seed) for seed in range(3)]


@pytest.fixture(scope="module")
def node_project():
    """tests/js with its locked node_modules; installed here from the npm registry when missing."""
    if not (JS_DIR / "node_modules" / "@huggingface" / "transformers").is_dir():
        # onnxruntime-node's install script only fetches GPU binaries from NuGet; the CPU ones ship in the package.
        env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"}
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, env=env, check=True, timeout=600)
    return JS_DIR


@pytest.mark.slow
@pytest.mark.needs("node")
def test_transformers_js_generates_the_same_greedy_tokens(node_project, tiny_clip, tmp_path):
    _, model, processor = tiny_clip
    folder = export_onnx(model, tmp_path / "export", processor=processor, quantize=("quantized",), fused_decoder=False)
    int8 = LlavaQwen3OnnxModel(folder, variant="quantized")  # the graphs transformers.js runs
    prompts = [
        ([user_prompt(processor, "What is in this picture?", 1)], IMAGES[:1]),
        ([user_prompt(processor, "Compare the three pictures.", 3)], IMAGES),
        ([user_prompt(processor, "Say something.", 0)], None),
        ([user_prompt(processor, "Hi?", 0), user_prompt(processor, "A longer question without any picture?", 0)], None),
    ]
    cases, expected = [], []
    for dtype in ("fp32", "q8"):  # transformers.js' q8 loads the *_quantized.onnx files
        for texts, images in prompts:
            inputs = processor(images=images, text=texts, return_tensors="pt")
            if dtype == "fp32":
                with torch.no_grad():
                    tokens = model.generate(**inputs, max_new_tokens=10, do_sample=False).tolist()
            else:
                tokens = int8.generate(**processor(images=images, text=texts, return_tensors="np"), max_new_tokens=10)
                tokens = tokens.tolist()
            case = {
                "dtype": dtype,
                "texts": [text.replace("<image>", "<image>" * processor.image_seq_length) for text in texts],
                "input_ids": inputs["input_ids"].tolist(),
                "attention_mask": inputs["attention_mask"].tolist(),
                "max_new_tokens": 10,
            }
            if images:
                case["pixel_values"] = inputs["pixel_values"].tolist()
                case["pixel_shape"] = list(inputs["pixel_values"].shape)
            cases.append(case)
            expected.append(tokens)
    cases_path = tmp_path / "cases.json"
    cases_path.write_text(json.dumps(cases))

    result = subprocess.run(
        ["node", "generate.mjs", str(folder), str(cases_path)],
        cwd=node_project,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    outputs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(outputs) == len(cases)
    for case, output, tokens in zip(cases, outputs, expected, strict=True):
        assert output["tokenized"] == case["input_ids"], "transformers.js tokenizes the prompt differently"
        assert output["sequences"] == tokens, f"{case['dtype']}: transformers.js generated other tokens"
