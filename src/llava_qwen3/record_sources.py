"""Record sources shared by training and evaluation: JSON list and JSON-lines files, Hugging Face `datasets` folders
(`save_to_disk`) or `datasets.Dataset`s, with images as paths or as the bytes of a `datasets` Image column.

A record that cannot be used is named by its id (or index) in a `BadRecordError`; the caller decides whether to skip
it or stop (`on_bad_record`). No torch is needed here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from .processing import ImageLimits, ImageLoadError, open_image

ON_BAD_RECORD = ("skip", "error")
DEFAULT_CAPTION_PROMPT = "Describe the picture."  # the question a caption record answers when it names none
IMAGE_LIMITS = ImageLimits()  # the processor's own default bounds


class BadRecordError(ValueError):
    """A record that cannot be used, named by its id or index."""


@dataclass(frozen=True)
class MalformedLine:
    """A line of a JSON-lines file that is not a JSON value: kept in its place so it is reported as a bad record."""

    line_number: int
    error: str


def check_on_bad_record(on_bad_record: str) -> None:
    """A ValueError unless `on_bad_record` is one of `ON_BAD_RECORD`."""
    if on_bad_record not in ON_BAD_RECORD:
        raise ValueError(f"on_bad_record {on_bad_record!r} is unknown; expected 'skip' or 'error'.")


def record_name(record: Any, index: int) -> str:
    """How a record is named in messages: `record <id>`, or `record <index>` when it has no id; a malformed JSON
    line raises its BadRecordError, named by its line number."""
    if isinstance(record, MalformedLine):
        raise BadRecordError(f"line {record.line_number}: not a JSON value ({record.error})")
    return f"record {record.get('id', index) if isinstance(record, dict) else index}"


def load_records(path: str | Path) -> list[dict[str, Any] | MalformedLine]:
    """The records of a JSON list file, or of a JSON-lines file (where a malformed line becomes a `MalformedLine`
    naming its line number, reported like any bad record)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"data file {path} is not a valid JSON list: {error}") from error
    records = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                records.append(MalformedLine(line_number, error.msg))
    return records


def open_record_image(source: Path | bytes, name: str, decode: bool = True) -> Image.Image | None:
    """The RGB image of record `name` at a path or in encoded bytes, read by the processor's loader within the
    processor's bounds; with `decode=False` only checked (PNG checksums, JPEG decoded at a reduced scale)."""
    where = "embedded image" if isinstance(source, bytes) else f"image {source}"
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise BadRecordError(f"{name}: {where} does not exist")
    try:
        image = open_image(source, where, IMAGE_LIMITS, decode=decode)
    except ImageLoadError as error:
        raise BadRecordError(f"{name}: {error}") from error
    return None if image is None else image.convert("RGB")


def image_source(value: Any, image_folder: Path) -> Path | bytes | None:
    """Where a record's image is: a path under `image_folder`, or the bytes a `datasets` Image column holds."""
    if isinstance(value, dict):  # datasets' Image(decode=False): {"bytes": ..., "path": ...}
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    return image_folder / value if value else None


def open_source(source: Any, image_column: str) -> tuple[Any, Path]:
    """The rows of `source` and the folder its image paths are relative to.

    `source` is a JSON / JSON-lines file, a folder written by `datasets.Dataset.save_to_disk`, or a `datasets.Dataset`.
    """
    if hasattr(source, "column_names"):
        rows, folder = source, Path.cwd()
    elif Path(source).is_dir():
        import datasets  # only needed for this form

        rows, folder = datasets.load_from_disk(str(source)), Path(source)
        if isinstance(rows, datasets.DatasetDict):
            raise ValueError(
                f"{source} holds a DatasetDict with splits {', '.join(rows)}; pass the folder of one split, "
                f"e.g. {Path(source) / next(iter(rows))}."
            )
    else:
        return load_records(source), Path(source).parent
    if image_column in rows.column_names and type(rows.features[image_column]).__name__ == "Image":
        from datasets import Image as ImageFeature

        rows = rows.cast_column(image_column, ImageFeature(decode=False))  # decode when read, check when loaded
    return rows, folder
