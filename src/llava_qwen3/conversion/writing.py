"""Writing converted folders: output checks, dtype, and a staged write that never leaves half a folder.

A folder is written into a hidden sibling (`.NAME.staging-PID-XXXX`) and renamed into place at the end. An error or
SIGTERM removes the sibling; one left by a process that was killed outright (SIGKILL, a power cut) is removed by
the next write to the same output once its process is gone. The folder gets the mode the umask gives any new folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..modeling import LlavaQwen3ForConditionalGeneration
from ..processing import LlavaQwen3Processor

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_MAX_SHARD_SIZE = "5GB"  # transformers' own default for save_pretrained


def check_output_folder(output: Path) -> None:
    """Refuses an output folder that already holds something, or one that cannot be created."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(f"--output {output} exists and is not an empty folder; choose a new folder.")
    ancestor = next(folder for folder in output.absolute().parents if folder.exists())
    try:  # a real attempt: permission bits say nothing of read-only mounts, or to root
        tempfile.TemporaryDirectory(dir=ancestor).cleanup()
    except OSError as error:
        raise ValueError(f"--output {output} cannot be created: {ancestor} is not writable ({error}).") from error


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


def _staging_pattern(output: Path) -> re.Pattern:
    return re.compile(rf"\.{re.escape(output.name)}\.staging-(\d+)-")


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_staging(output: Path) -> list[Path]:
    """Removes the staging folders of `output` whose writing process is gone; returns them."""
    pattern, removed = _staging_pattern(output), []
    for sibling in output.parent.glob(f".{output.name}.staging-*"):
        match = pattern.match(sibling.name)
        if match and sibling.is_dir() and not _process_is_alive(int(match.group(1))):
            shutil.rmtree(sibling, ignore_errors=True)
            removed.append(sibling)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM raises SystemExit (so cleanup runs) instead of killing the process outright."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def staged_folder(output: Path) -> Iterator[Path]:
    """Yields a hidden sibling folder to write into and renames it to `output` once the block succeeds; a failure or
    SIGTERM removes it, so `output` is either complete or absent."""
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(output)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.staging-{os.getpid()}-", dir=output.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700 whatever the umask
    try:
        with _terminate_as_exit():
            yield staging
            if output.exists():
                output.rmdir()
            staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_checkpoint(
    model: LlavaQwen3ForConditionalGeneration,
    processor: LlavaQwen3Processor,
    output: Path,
    max_shard_size: str = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """Saves model and processor into a hidden sibling folder, then renames it to `output`."""
    with staged_folder(Path(output)) as staging:
        model.save_pretrained(staging, max_shard_size=max_shard_size)
        processor.save_pretrained(staging)
    return Path(output)


def missing_checkpoint_files(folder: Path) -> list[str]:
    """What a checkpoint folder lacks of the files `from_pretrained` needs (empty when it is complete)."""
    required = ["config.json", "tokenizer.json", "tokenizer_config.json", "processor_config.json"]
    missing = [name for name in required if not (folder / name).is_file()]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text())["weight_map"].values())
        missing += sorted(shard for shard in shards if not (folder / shard).is_file())
    elif not (folder / "model.safetensors").is_file():
        missing.append("model.safetensors")
    return missing


def print_folder(folder: Path) -> None:
    """Prints each file of `folder` with its size."""
    for path in sorted(folder.iterdir()):
        print(f"{path.stat().st_size:>14,}  {path}")
