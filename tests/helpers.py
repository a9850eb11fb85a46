"""Helpers the tests share: real images drawn with Pillow, chat prompts, training arguments and examples, and a
fresh-process runner."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from transformers import TrainingArguments

from llava_qwen3.training import from_llava_record

TRANSFORMERS_MAJOR = int(__import__("transformers").__version__.split(".")[0])


def draw_image(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A real RGB image: a coloured background with a few shapes, different for each seed."""
    generator = torch.Generator().manual_seed(seed)
    colours = torch.randint(0, 256, (4, 3), generator=generator).tolist()
    image = Image.new("RGB", size, tuple(colours[0]))
    draw = ImageDraw.Draw(image)
    width, height = size
    draw.ellipse((2, 2, width // 2, height // 2), fill=tuple(colours[1]))
    draw.rectangle((width // 2, height // 3, width - 2, height - 2), fill=tuple(colours[2]))
    draw.polygon([(0, height - 1), (width // 3, height // 2), (width // 2, height - 1)], fill=tuple(colours[3]))
    return image


def user_prompt(processor, text: str, num_images: int) -> str:
    content = [{"type": "image"}] * num_images + [{"type": "text", "text": text}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def run_fresh_python(code: str, cwd: Path, block_package: bool = True, env: dict[str, str] | None = None) -> str:
    """Runs `code` in a new interpreter, offline, where `llava_qwen3` cannot be imported when `block_package`."""
    prelude = "import sys\nsys.modules['llava_qwen3'] = None\n" if block_package else ""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": "", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"fresh process failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def training_args(tmp_path, **overrides):
    settings = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        max_steps=3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=True,
        disable_tqdm=True,
    )
    return TrainingArguments(**{**settings, **overrides})


def colour_examples() -> list[dict]:
    """Four pictures, each with a colour question and a one-word answer."""
    question = {"from": "human", "value": "<image>\nColour?"}
    answers = ["Red.", "Blue.", "Green.", "Red."]
    return [
        from_llava_record({"conversations": [question, {"from": "gpt", "value": answer}]}, [draw_image(index)])
        for index, answer in enumerate(answers)
    ]
