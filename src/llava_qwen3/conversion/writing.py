"""Writing converted folders: output checks, dtype, and a staged write that never leaves half a folder."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..modeling import LlavaQwen3ForConditionalGeneration
from ..processing import LlavaQwen3Processor

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_output_folder(output: Path) -> None:
    """Refuses an output folder that already holds something."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(f"--output {output} exists and is not an empty folder; choose a new folder.")


def check_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r} is unknown; expected one of {', '.join(DTYPES)}.")
    return DTYPES[dtype]


def cast(model: LlavaQwen3ForConditionalGeneration, dtype: torch.dtype) -> None:
    """Casts the weights and records the dtype where `from_pretrained(dtype="auto")` looks for it."""
    model.to(dtype)
    # The sub-configs are read too, and still carry the dtypes of the parts they came from.
    for config in (model.config, model.config.text_config, model.config.vision_config):
        config.dtype = dtype


@contextmanager
def staged_folder(output: Path) -> Iterator[Path]:
    """Yields a hidden sibling folder to write into and renames it to `output` once the block succeeds; a failure
    removes it, so `output` is either complete or absent."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        yield staging
        if output.exists():
            output.rmdir()
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_checkpoint(
    model: LlavaQwen3ForConditionalGeneration, processor: LlavaQwen3Processor, output: Path, max_shard_size: str
) -> Path:
    """Saves model and processor into a hidden sibling folder, then renames it to `output`."""
    with staged_folder(output) as staging:
        model.save_pretrained(staging, max_shard_size=max_shard_size)
        processor.save_pretrained(staging)
    return output


def print_folder(folder: Path) -> None:
    """Prints each file of `folder` with its size."""
    for path in sorted(folder.iterdir()):
        print(f"{path.stat().st_size:>14,}  {path}")
