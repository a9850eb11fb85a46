"""A checkpoint folder loads with trust_remote_code in a fresh process where the package cannot be imported."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import TRANSFORMERS_MAJOR, draw_image, run_fresh_python, user_prompt
from transformers import AutoModelForImageTextToText, AutoProcessor

from llava_qwen3 import LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor

pytestmark = pytest.mark.slow

# The auto classes user code calls on each transformers line.
AUTO_MODEL_CLASSES = ["AutoModelForImageTextToText"] + (["AutoModelForVision2Seq"] if TRANSFORMERS_MAJOR < 5 else [])


def _checkpoint_only_copy(folder, tmp_path):
    target = tmp_path / "checkpoint"
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_saved_folder_holds_exactly_the_checkpoint_files(tiny_clip):
    folder, _, _ = tiny_clip
    names = {path.name for path in folder.iterdir()}
    assert {"configuration_llava_qwen3.py", "modeling_llava_qwen3.py", "processing_llava_qwen3.py"} <= names
    assert "model.safetensors" in names and not any(name.endswith(".bin") for name in names)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llava_qwen3"
    assert set(AUTO_MODEL_CLASSES + ["AutoConfig", "AutoModel"]) <= set(config["auto_map"])
    assert config["auto_map"]["AutoModelForImageTextToText"].startswith("modeling_llava_qwen3.")
    processor_config = json.loads((folder / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_llava_qwen3.LlavaQwen3Processor"


@pytest.mark.parametrize("auto_class", AUTO_MODEL_CLASSES)
def test_fresh_process_without_the_package_loads_through_auto_classes(tiny, tmp_path, auto_class):
    folder, model, processor = tiny
    _checkpoint_only_copy(folder, tmp_path)
    draw_image(7).save(tmp_path / "image.png")
    prompt = user_prompt(processor, "What is in the picture?", 1)
    (tmp_path / "prompt.txt").write_text(prompt)
    run_fresh_python(
        f"""
        import torch, transformers
        from PIL import Image
        from transformers import AutoConfig, AutoProcessor, {auto_class}
        try:
            import llava_qwen3
            raise SystemExit("the package must not be importable here")
        except ImportError:
            pass
        config = AutoConfig.from_pretrained("checkpoint", trust_remote_code=True)
        model = {auto_class}.from_pretrained("checkpoint", trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained("checkpoint", trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
        assert type(config).__name__ == "LlavaQwen3Config"
        inputs = processor(images=[Image.open("image.png")], text=open("prompt.txt").read(), return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        torch.save({{"input_ids": inputs["input_ids"], "logits": logits, "generated": generated}}, "out.pt")
        """,
        cwd=tmp_path,
    )
    result = torch.load(tmp_path / "out.pt")
    inputs = processor(images=[draw_image(7)], text=prompt, return_tensors="pt")
    assert torch.equal(result["input_ids"], inputs["input_ids"])
    with torch.no_grad():
        assert torch.allclose(result["logits"], model(**inputs).logits, atol=1e-6)
    assert torch.equal(result["generated"], model.generate(**inputs, max_new_tokens=5, do_sample=False))


def test_pipeline_answers_a_chat_message_holding_an_image(tiny_clip, tmp_path):
    folder, model, processor = tiny_clip
    checkpoint = _checkpoint_only_copy(folder, tmp_path)
    draw_image(8).save(tmp_path / "image.png")
    messages = [
        {"role": "user", "content": [{"type": "image", "image": "image.png"}, {"type": "text", "text": "Describe it."}]}
    ]
    (tmp_path / "messages.json").write_text(json.dumps(messages))
    output = run_fresh_python(
        f"""
        import json
        from transformers import pipeline
        pipe = pipeline("image-text-to-text", model={str(checkpoint)!r}, trust_remote_code=True)
        out = pipe(text=json.load(open("messages.json")), max_new_tokens=6, do_sample=False, return_full_text=False)
        print(json.dumps(out[0]["generated_text"]))
        """,
        cwd=tmp_path,
    )
    answer = json.loads(output.strip().splitlines()[-1])
    inputs = processor(images=[draw_image(8)], text=user_prompt(processor, "Describe it.", 1), return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=6, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert answer == processor.decode(generated, skip_special_tokens=True)
    assert answer.strip(), "the pipeline must answer with some text"


def test_importing_the_package_registers_the_auto_classes(tiny_clip):
    folder, _, _ = tiny_clip
    # No trust_remote_code: the classes come from the installed package.
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    assert type(model) is LlavaQwen3ForConditionalGeneration
    assert type(processor) is LlavaQwen3Processor
