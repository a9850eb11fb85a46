"""Write a LLaVA JSON file and its image folder as parquet shards for streaming:
`llava-qwen3-write-shards LLAVA_JSON IMAGE_FOLDER OUTPUT_DIR [--records-per-shard N]`.

Each shard holds `--records-per-shard` records as rows `{"id", "image": {"bytes", "path"}, "conversations"}` (caption
records converted to conversations, images stored as their file's bytes, in the layout of a `datasets` Image column),
in row groups of at most 100 records so that a reader holds little at a time. Every record is checked first as
training checks it, and a bad one (missing or corrupt image, no `<image>` for its image, an empty reply, ...) is
logged with its id, counted and left out. `shards.json` records the counts. The folder is written whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..commands import exit_on_error
from ..conversion.writing import check_output_folder, staged_folder
from ..processing import IMAGE_TOKEN
from ..record_sources import BadRecordError, load_records
from .data import check_record
from .streaming import SHARD_SUFFIX

logger = logging.getLogger(__name__)
ROW_GROUP_RECORDS = 100
MANIFEST = "shards.json"


@dataclass
class ShardSummary:
    """What `write_shards` wrote: records per shard file, and the bad records left out (with why)."""

    shards: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(self.shards.values())


def shard_row(record: Any, index: int, image_folder: Path) -> dict[str, Any]:
    """The row of a good record; a BadRecordError naming a bad one."""
    name, llava, image = check_record(record, index, image_folder)
    placeholders = sum(turn["value"].count(IMAGE_TOKEN) for turn in llava["conversations"])
    if placeholders != int(image is not None):
        raise BadRecordError(
            f"{name}: the text holds {placeholders} {IMAGE_TOKEN} placeholders for {int(image is not None)} images"
        )
    if "multimodal_data" in llava:
        raise BadRecordError(f"{name}: records with embedding files are not carried into shards")
    turns = [{"from": turn["from"], "value": turn["value"]} for turn in llava["conversations"]]
    stored = None
    if image is not None:
        path = record["image"] if isinstance(record.get("image"), str) else None
        stored = {"bytes": image if isinstance(image, bytes) else image.read_bytes(), "path": path}
    return {"id": str(record.get("id", index)), "image": stored, "conversations": turns}


def _write_shard(rows: list[dict[str, Any]], folder: Path, number: int, summary: ShardSummary) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = f"shard-{number:05d}{SHARD_SUFFIX}"
    pq.write_table(pa.Table.from_pylist(rows), folder / name, row_group_size=ROW_GROUP_RECORDS)
    summary.shards[name] = len(rows)


def write_shards(
    llava_json: str | Path, image_folder: str | Path, output: str | Path, records_per_shard: int = 1000
) -> ShardSummary:
    """Writes the good records of `llava_json` (images under `image_folder`) as parquet shards in `output`, which
    must not exist yet; returns what was written."""
    from tqdm.auto import tqdm

    if records_per_shard < 1:
        raise ValueError(f"--records-per-shard must be at least 1, not {records_per_shard}.")
    output, image_folder = Path(output), Path(image_folder)
    check_output_folder(output)
    if not image_folder.is_dir():
        raise ValueError(f"image folder {image_folder} does not exist.")
    records = load_records(llava_json)
    summary, rows = ShardSummary(), []
    with staged_folder(output) as staging:
        for index, record in enumerate(tqdm(records, desc="writing shards", unit="record")):
            try:
                rows.append(shard_row(record, index, image_folder))
            except BadRecordError as error:
                logger.warning("skipping %s", error)
                summary.skipped.append(str(error))
            if len(rows) == records_per_shard:
                _write_shard(rows, staging, len(summary.shards), summary)
                rows = []
        if rows:
            _write_shard(rows, staging, len(summary.shards), summary)
        if not summary.shards:
            raise ValueError(f"{llava_json} holds no usable record.")
        manifest = {"records": summary.records, **asdict(summary)}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return summary


def main(argv: list[str] | None = None) -> None:
    """Command line of write_shards."""
    parser = argparse.ArgumentParser(
        prog="llava-qwen3-write-shards", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("llava_json", help="LLaVA's JSON list (or JSON lines) of records")
    parser.add_argument("image_folder", help="the folder the records' image paths are relative to")
    parser.add_argument("output_dir", type=Path, help="a new folder for the shards")
    parser.add_argument("--records-per-shard", type=int, default=1000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with exit_on_error(parser):
        summary = write_shards(args.llava_json, args.image_folder, args.output_dir, args.records_per_shard)
    shards, skipped = len(summary.shards), len(summary.skipped)
    print(f"wrote {summary.records} records in {shards} shards to {args.output_dir}; skipped {skipped} bad records")


if __name__ == "__main__":
    main()
