"""Every shell and Python block of README.md and docs/*.md runs as written, so the docs cannot drift from the code.

Each block runs in a fresh process, in a copy of a sandbox folder holding what the examples name: the checkpoint
`my-llava-qwen3` (tiny, random), its ONNX export `my-llava-qwen3-onnx`, `demo-checkpoint`, `with-m1` (with modalities
m1 of 512 values and m2 of 64), pictures `photo.jpg` and `photo.png`, tiny pretrained parts (`parts/clip`,
`parts/siglip`, `parts/qwen3`), a transformers Llava checkpoint `llava-checkpoint`, synthetic-shapes data
(`train.json`, `held_out.json`, `images/`) and the repository's `examples/`. Nothing reaches the
network. A block that cannot run here is marked on the line before it with `<!-- docs-test: skip: REASON -->` and
reported as skipped with that reason; one that needs an optional part (a built llama.cpp, ...) is marked
`<!-- docs-test: needs: PART -->` and follows the rule of tests/helpers.py's OPTIONAL_PARTS.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import draw_image, require, save_tiny_llava, write_tiny_parts

from llava_qwen3 import LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor
from llava_qwen3.conversion.modalities import add_modality
from llava_qwen3.conversion.writing import write_checkpoint
from llava_qwen3.training.synthetic import write_dataset

pytestmark = [pytest.mark.slow, pytest.mark.one_line]  # the examples drive the model through public APIs only
ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(
    r"^(?:<!-- docs-test: (?:skip: (?P<reason>.+?)|needs: (?P<needs>[\w.-]+)) -->\n)?"
    r"```(?P<language>python|bash)\n(?P<code>.*?)^```$",
    re.M | re.S,
)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    code: str
    skip_reason: str | None
    needs: str | None  # an optional part (helpers.OPTIONAL_PARTS) the block runs only with

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def doc_blocks() -> list[Block]:
    """The python and bash blocks of every page, with the line each starts on."""
    blocks = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("code"))
            blocks.append(Block(page, line, match["language"], match["code"], match["reason"], match["needs"]))
    return blocks


@pytest.fixture(scope="session")
def docs_sandbox(tmp_path_factory, tiny_clip, onnx_export):
    """The folder the examples run in (see the module docstring)."""
    root = tmp_path_factory.mktemp("docs-sandbox")
    shutil.copytree(tiny_clip[0], root / "my-llava-qwen3")
    shutil.copytree(tiny_clip[0], root / "demo-checkpoint")
    shutil.copytree(onnx_export[0], root / "my-llava-qwen3-onnx")
    draw_image(0, size=(96, 72)).save(root / "photo.jpg")
    draw_image(1, size=(96, 72)).save(root / "photo.png")
    write_tiny_parts(root / "parts")
    save_tiny_llava(root / "llava-checkpoint", "clip", "full")
    write_dataset(root, number=4, split="train", seed=0)
    write_dataset(root, number=4, split="held_out", seed=1)
    shutil.copytree(ROOT / "examples", root / "examples")
    model = LlavaQwen3ForConditionalGeneration.from_pretrained(tiny_clip[0])
    processor = LlavaQwen3Processor.from_pretrained(tiny_clip[0])
    add_modality(model, processor, "m1", input_dim=512)
    add_modality(model, processor, "m2", input_dim=64)
    write_checkpoint(model, processor, root / "with-m1")
    return root


@pytest.mark.parametrize("block", doc_blocks(), ids=lambda block: block.name)
def test_docs_block_runs_as_written(block, docs_sandbox, tmp_path):
    if block.skip_reason is not None:
        pytest.skip(f"{block.name}: {block.skip_reason}")
    if block.needs is not None:
        require(block.needs)
    work = tmp_path / "work"
    shutil.copytree(docs_sandbox, work)
    bin_folder = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PATH": f"{bin_folder}:{os.environ['PATH']}",
    }
    command = (
        [sys.executable, "-c", block.code]
        if block.language == "python"
        else ["bash", "-euo", "pipefail", "-c", block.code]
    )
    # errors="replace": a random model's answer, printed by an example, need not be valid UTF-8.
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, errors="replace", timeout=600)
    assert result.returncode == 0, (
        f"{block.name} failed:\n{block.code}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )


def test_no_block_escapes_the_docs_test():
    """Shell and Python examples must use the fences this test runs (```bash, ```python), not look-alikes."""
    for page in PAGES:
        fences = re.findall(r"^```(sh|shell|console|py|python3|zsh)\b", page.read_text(encoding="utf-8"), re.M)
        assert not fences, f"{page.relative_to(ROOT)} has ```{fences[0]} blocks; write ```bash or ```python"
