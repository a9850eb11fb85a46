"""Helpers the tests share: the optional parts some tests need (the one rule for skipping without them), real images
drawn with Pillow, chat prompts, training arguments and examples, and a fresh-process runner."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import (
    CLIPConfig,
    CLIPModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    Qwen3ForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
    TrainingArguments,
)

from llava_qwen3.conversion import tiny_config, train_tokenizer
from llava_qwen3.conversion.build import SiglipImageProcessorPil
from llava_qwen3.conversion.tiny import image_processor_for
from llava_qwen3.training import from_llava_record

TRANSFORMERS_MAJOR = int(__import__("transformers").__version__.split(".")[0])

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "build" / "test-artifacts"  # screenshots and figures the tests leave for a person to look at
# Debian's Chromium as the browser tests start it: without the background-networking flags its connections are
# refused on this kind of machine, many at a time.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Set by scripts/test.sh and scripts/test_vllm.sh, which install every optional part their tests need: there a missing
# part fails its tests instead of skipping them, so CI cannot pass by skipping.
REQUIRE_OPTIONAL = "LLAVA_QWEN3_REQUIRE_OPTIONAL"


@dataclass(frozen=True)
class OptionalPart:
    """Something a few tests need that `pip install -e '.[dev]'` does not install: Python modules or executables, and
    the one reason line of its skips (what is missing and how to get it)."""

    reason: str
    modules: tuple[str, ...] = ()
    executables: tuple[str, ...] = ()  # names on the PATH or absolute paths
    probe: Callable[[], bool] | None = None  # a service the part needs answers (asked after the checks above)

    def is_here(self) -> bool:
        """Whether every module can be imported and every executable found (without importing anything), and the
        probe, where there is one, answers."""
        found = all(importlib.util.find_spec(name) is not None for name in self.modules) and all(
            shutil.which(name) is not None for name in self.executables
        )
        return found and (self.probe is None or self.probe())


def docker_engine_answers() -> bool:
    """Whether a Docker engine answers the `docker` client (within 20 s)."""
    try:
        result = subprocess.run(["docker", "version"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


OPTIONAL_PARTS = {
    "chromium": OptionalPart(
        "needs Chromium at /usr/bin/chromium: run bash scripts/test.sh, which installs Debian's chromium "
        "(or apt-get install chromium)",
        executables=("/usr/bin/chromium",),
    ),
    "curl": OptionalPart(
        "needs curl: run bash scripts/test.sh, which installs Debian's curl (or apt-get install curl)",
        executables=("curl",),
    ),
    "docker": OptionalPart(
        "needs a running Docker engine: run bash scripts/test.sh, which installs Debian's docker.io and starts dockerd "
        "(bash scripts/container_test_setup.sh alone does that and makes the test's base image and wheelhouse)",
        executables=("docker",),
        probe=docker_engine_answers,
    ),
    "java": OptionalPart(
        "needs Java for pycocoevalcap: run bash scripts/test.sh, which installs Debian's default-jre-headless "
        "(or apt-get install default-jre-headless)",
        executables=("java",),
    ),
    "llama.cpp": OptionalPart(
        "needs llama.cpp's llama-server and llama-quantize on the PATH: bash scripts/build_llama_cpp.sh builds them "
        "(scripts/test.sh does) and prints their folder",
        executables=("llama-server", "llama-quantize"),
    ),
    "lmms-eval": OptionalPart(
        "needs lmms-eval: run bash scripts/test.sh, or bash scripts/install_lmms_eval.sh VENV to install it into the "
        "virtual environment VENV",
        modules=("lmms_eval",),
    ),
    "node": OptionalPart(
        "needs Node.js and npm: run bash scripts/test.sh, which installs Debian's nodejs and npm "
        "(or apt-get install nodejs npm)",
        executables=("node", "npm"),
    ),
    "vllm": OptionalPart(
        "needs vLLM, which lives in its own environment: bash scripts/test_vllm.sh builds .venv-vllm and runs these "
        "tests",
        modules=("vllm",),
    ),
}


def require(part: str) -> None:
    """Skips the calling test, or the calling module at import, when the optional part named `part` (a key of
    `OPTIONAL_PARTS`) is missing; fails it instead where REQUIRE_OPTIONAL is 1. A test declares a part with
    `@pytest.mark.needs(part)` (tests/conftest.py calls this before its fixtures); a module that imports the part at its
    top calls this first.

    Every skip is raised from this one line with the part's one reason, so `pytest -rs` prints each missing part once,
    however many tests and files need it."""
    optional = OPTIONAL_PARTS[part]
    if optional.is_here():
        return
    if os.environ.get(REQUIRE_OPTIONAL) == "1":
        pytest.fail(f"{REQUIRE_OPTIONAL}=1, so this fails instead of skipping: {optional.reason}", pytrace=False)
    pytest.skip(optional.reason, allow_module_level=True)


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


def write_tiny_parts(root: Path) -> Path:
    """Tiny pretrained parts in `root`: a full CLIPModel (`clip`), a SigLIP vision model (`siglip`), a Qwen3 causal LM
    with its tokenizer (`qwen3`), as a user has them before `llava-qwen3-build`."""
    tokenizer = train_tokenizer(with_image_token=False)
    reference = tiny_config(vocab_size=len(tokenizer), image_token_id=0)
    torch.manual_seed(0)
    text_config = reference.text_config
    text_config.vocab_size = len(tokenizer) + 6  # padded like Qwen's embedding matrix
    Qwen3ForCausalLM(text_config).save_pretrained(root / "qwen3")
    tokenizer.save_pretrained(root / "qwen3")

    vision = reference.vision_config.to_dict()
    clip = CLIPConfig(
        vision_config=vision,
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "vocab_size": 99,
        },
    )
    CLIPModel(clip).save_pretrained(root / "clip")
    image_processor_for(reference).save_pretrained(root / "clip")  # CLIP's, at the tower's 32 pixels
    siglip = {
        key: vision[key]
        for key in (
            "image_size",
            "patch_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
        )
    }
    SiglipVisionModel(SiglipVisionConfig(**siglip)).save_pretrained(root / "siglip")
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(root / "siglip")
    return root


def save_tiny_llava(
    folder: Path, vision: str, strategy: str, act: str = "gelu", text_model_type: str = "qwen3"
) -> LlavaProcessor:
    """A tiny transformers `LlavaForConditionalGeneration` checkpoint (Qwen3 text unless told) with its processor, as
    `llava-qwen3-import` takes them."""
    tokenizer = train_tokenizer()
    reference = tiny_config(len(tokenizer), tokenizer.convert_tokens_to_ids("<image>"), vision=vision)
    text_config = reference.text_config.to_dict()
    if text_model_type != "qwen3":
        text_config = {
            "model_type": text_model_type,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "vocab_size": len(tokenizer),
        }
    config = LlavaConfig(
        vision_config=reference.vision_config.to_dict(),
        text_config=text_config,
        image_token_index=reference.image_token_id,
        projector_hidden_act=act,
        vision_feature_layer=-2,
        vision_feature_select_strategy=strategy,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor = LlavaProcessor(
        image_processor_for(reference),
        tokenizer,
        patch_size=8,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=1 if vision == "clip" else 0,
        chat_template="{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}",
    )
    processor.save_pretrained(folder)
    return processor
