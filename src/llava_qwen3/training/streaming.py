"""Streaming training data: a folder of parquet shards (written by `llava-qwen3-write-shards`, or any parquet files of
LLaVA records) read with Hugging Face `datasets` in streaming mode, so that memory holds the shuffle buffer and the
batches in flight, never the data set.

Each process reads its own part (`split_dataset_by_node`), and each data-loader worker its own shards; records are
shuffled by seed (the shard order, then a buffer the shards pass through one at a time: `IterableDataset.shuffle`,
reseeded every epoch), checked as
`RecordDataset` checks them, and their images decoded in the worker. A bad record is logged with its id, counted and
skipped, never raised mid-run (unless `on_bad_record="error"`). The stream does not end: epochs follow one another,
and the Trainer stops after `max_steps` (`steps_for`).

Resuming mid-epoch: every example carries where it was in its worker's stream (epoch, records read), the Trainer
keeps the position of the last example it trained on (`StreamProgress`), and each checkpoint-N holds it per process
(`stream_state_rank<R>.json`). A resumed stream rebuilds the same shuffled order and passes over the records already
trained on without decoding them, so over an interrupted epoch each record is trained on once. (The position in
`datasets`' own `IterableDataset.state_dict()` is not used: it runs ahead of training by the batches the data loader
has prefetched, and it drops the shuffle buffer's content on reload.)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info
from transformers import TrainerCallback

from ..record_sources import BadRecordError, check_on_bad_record, open_record_image
from .collator import from_llava_record
from .data import check_record

logger = logging.getLogger(__name__)
SHARD_SUFFIX = ".parquet"
STATE_FILE = "stream_state_rank{rank}.json"
DATASETS_SAVE_MARKER = "state.json"  # what `datasets.Dataset.save_to_disk` writes beside its arrow files


def is_shard_folder(path: str | Path) -> bool:
    """Whether `data` names a folder to stream: any folder but one written by `datasets`' `save_to_disk`."""
    path = Path(path)
    return path.is_dir() and not (path / DATASETS_SAVE_MARKER).is_file() and not (path / "dataset_dict.json").is_file()


def shard_files(folder: str | Path) -> list[Path]:
    """The parquet shards under `folder`, in name order; a ValueError when there are none."""
    files = sorted(Path(folder).rglob(f"*{SHARD_SUFFIX}"))
    if not files:
        raise ValueError(
            f"{folder} holds no {SHARD_SUFFIX} shards; write them with llava-qwen3-write-shards LLAVA_JSON "
            "IMAGE_FOLDER OUTPUT_DIR, or point data at a JSON file."
        )
    return files


def count_records(files: list[Path]) -> int:
    """The records in parquet `files`, from their footers (nothing else is read)."""
    import pyarrow.parquet as pq  # datasets' own dependency

    return sum(pq.ParquetFile(path).metadata.num_rows for path in files)


def steps_for(records: int, epochs: float, batch_size: int, accumulation: int, world_size: int) -> int:
    """Optimizer steps for `epochs` passes over `records` shared by `world_size` processes."""
    return max(1, math.ceil(epochs * (records // world_size) / (batch_size * accumulation)))


@dataclass
class StreamPosition:
    """Where one data-loader worker's stream is: its epoch, the records of that epoch read up to the last example
    trained on (good and bad), and the bad records skipped so far in all epochs."""

    epoch: int = 0
    records: int = 0
    skipped: int = 0


class StreamingRecords(IterableDataset):
    """The records of a shard folder as chat examples, streamed (see the module docstring).

    `check_example` is the collator's load-time check, as `RecordDataset` takes it; `start` maps each data-loader
    worker (0 without workers) to the position it resumes from (`load_stream_state`).
    """

    def __init__(
        self,
        folder: str | Path,
        check_example: Callable[[dict[str, Any], int], None] | None = None,
        image_folder: str | Path | None = None,
        seed: int = 42,
        shuffle_buffer: int = 1000,
        rank: int = 0,
        world_size: int = 1,
        on_bad_record: str = "skip",
        image_column: str = "image",
        start: dict[int, StreamPosition] | None = None,
    ) -> None:
        check_on_bad_record(on_bad_record)
        self.files = shard_files(folder)
        self.records = count_records(self.files)
        self.image_folder = Path(image_folder) if image_folder is not None else Path(folder)
        self.check_example = check_example
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        self.rank, self.world_size = rank, world_size
        self.on_bad_record, self.image_column = on_bad_record, image_column
        self.start = dict(start or {})

    def epoch_rows(self, epoch: int):
        """This process's rows of `epoch` in their shuffled order: a `datasets.IterableDataset`, which gives each
        data-loader worker its own shards."""
        from datasets import Image, load_dataset
        from datasets.distributed import split_dataset_by_node

        rows = load_dataset("parquet", data_files=[str(path) for path in self.files], split="train", streaming=True)
        if isinstance((rows.features or {}).get(self.image_column), Image):
            rows = rows.cast_column(self.image_column, Image(decode=False))  # decoded only once the record passes
        # One shard at a time into the buffer: datasets reads several with threads, and then pauses 5 s at the end
        # of every pass (a guard against an Arrow crash at thread shutdown).
        rows = rows.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer, max_buffer_input_shards=1)
        rows.set_epoch(epoch)
        return split_dataset_by_node(rows, rank=self.rank, world_size=self.world_size)

    def _example(self, row: dict[str, Any], index: int) -> dict[str, Any]:
        """The training example of a row (its image decoded, its name under "record"), or a BadRecordError."""
        name, record, image = check_record(row, index, self.image_folder, self.image_column, self.check_example)
        images = [open_record_image(image, name)] if image is not None else []
        return {**from_llava_record(record, images), "record": name}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        worker_id = worker.id if worker is not None else 0
        position = self.start.get(worker_id, StreamPosition())
        epoch, done, skipped = position.epoch, position.records, 0
        while True:
            read = usable = 0
            for read, row in enumerate(self.epoch_rows(epoch), start=1):
                if read <= done:
                    continue  # trained on before the run was resumed
                try:
                    example = self._example(row, read)
                except BadRecordError as error:
                    if self.on_bad_record == "error":
                        raise
                    logger.warning("skipping %s", error)
                    skipped += 1
                    continue
                usable += 1
                yield {**example, "stream_position": (worker_id, epoch, read, skipped)}
                skipped = 0
            if read == 0:
                return  # this worker was given no shard
            if usable == 0 and done == 0:
                raise ValueError(f"no record of the shards in {self.files[0].parent} is usable (see the warnings).")
            epoch, done = epoch + 1, 0


class StreamCollator:
    """The chat collator, plus each example's stream position as the batch's `stream_position` rows (worker, epoch,
    records read, bad records skipped before it), which the Trainer takes off before the model sees the batch."""

    def __init__(self, collator: Callable[[list[dict[str, Any]]], Any]) -> None:
        self.collator = collator

    def __call__(self, examples: list[dict[str, Any]]) -> Any:
        batch = self.collator(examples)
        batch["stream_position"] = torch.tensor([example["stream_position"] for example in examples])
        return batch


class StreamProgress:
    """The stream position of the last example trained on, per data-loader worker of this process."""

    def __init__(self, start: dict[int, StreamPosition] | None = None) -> None:
        self.positions = dict(start or {})

    def trained_on(self, rows: torch.Tensor) -> None:
        """Records a batch's `stream_position` rows as trained on."""
        for worker, epoch, records, skipped in rows.tolist():
            before = self.positions.get(worker, StreamPosition())
            self.positions[worker] = StreamPosition(epoch, records, before.skipped + skipped)

    @property
    def skipped(self) -> int:
        return sum(position.skipped for position in self.positions.values())

    def save(self, checkpoint: Path, rank: int, world_size: int, workers: int) -> None:
        state = {
            "world_size": world_size,
            "dataloader_workers": workers,
            "workers": {str(worker): asdict(position) for worker, position in sorted(self.positions.items())},
        }
        (checkpoint / STATE_FILE.format(rank=rank)).write_text(json.dumps(state, indent=1))


def load_stream_state(checkpoint: str | Path, rank: int, world_size: int, workers: int) -> dict[int, StreamPosition]:
    """The stream positions this process saved in `checkpoint`; a ValueError when it holds none for this process or
    was written with another number of processes or data-loader workers (each reads its own part of the stream)."""
    path = Path(checkpoint) / STATE_FILE.format(rank=rank)
    if not path.is_file():
        raise ValueError(
            f"{checkpoint} holds no {path.name}: it was not written by a streamed run with {world_size} processes, "
            "so the position in the stream is unknown; resume from a checkpoint of this run."
        )
    state = json.loads(path.read_text())
    if (state["world_size"], state["dataloader_workers"]) != (world_size, workers):
        raise ValueError(
            f"{checkpoint} was written by {state['world_size']} processes with dataloader_workers="
            f"{state['dataloader_workers']}; resume with the same (now {world_size} and {workers}), as each reads "
            "its own part of the stream."
        )
    return {int(worker): StreamPosition(**position) for worker, position in state["workers"].items()}


class StreamStateCallback(TrainerCallback):
    """Saves the stream position into each checkpoint-N as it is written, one file per process."""

    def __init__(self, progress: StreamProgress, workers: int) -> None:
        self.progress, self.workers = progress, workers

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.progress.save(checkpoint, args.process_index, args.world_size, self.workers)
