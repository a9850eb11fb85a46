"""Training data: record files -> chat examples with their images loaded.

Sources: a JSON list or JSON-lines file, or a Hugging Face `datasets` dataset (a `save_to_disk` folder or a
`datasets.Dataset`) with an image column. Formats, told apart per record:
- LLaVA conversations: `{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
  {"from": "gpt", "value": ...}, ...]}`, multi-turn, `"image"` optional (text-only or embeddings-only records);
- captions: `{"image", "text", "prompt"}` (`prompt` optional), one question and its answer.
Either may carry `"multimodal_data": {"multimodal_embeddings": {name: [items]}}`.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..processing import LlavaQwen3Processor
from .collator import from_llava_record

logger = logging.getLogger(__name__)
DEFAULT_CAPTION_PROMPT = "Describe the picture."
MAX_IMAGE_PIXELS = LlavaQwen3Processor.max_image_pixels  # the processor refuses larger images


class BadRecordError(ValueError):
    """A record that cannot be used, named by its id or index."""


@dataclass(frozen=True)
class MalformedLine:
    """A line of a JSON-lines file that is not a JSON value: kept in its place so it is reported as a bad record."""

    line_number: int
    error: str


def load_records(path: str | Path) -> list[dict[str, Any] | MalformedLine]:
    """The records of a JSON list file, or of a JSON-lines file (where a malformed line becomes a `MalformedLine`
    naming its line number)."""
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


def _open_image(source: Path | bytes, name: str, decode: bool = True) -> Image.Image | None:
    """The RGB image at a path or in encoded bytes; with `decode=False` only checks it: its size within Pillow's
    decompression-bomb limit, and its data intact (JPEGs are decoded at a reduced scale to find truncation)."""
    where = "embedded image" if isinstance(source, bytes) else f"image {source}"
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise BadRecordError(
                    f"{name}: {where} is past Pillow's decompression-bomb limit: {width}x{height} pixels, more "
                    f"than {MAX_IMAGE_PIXELS:,}"
                )
            if not decode:
                if image.format == "PNG":
                    image.verify()  # checks every chunk's checksum without decompressing
                else:
                    image.draft("RGB", (64, 64))  # JPEG: decode at 1/8 scale, enough to find a truncated file
                    image.load()
                return None
            return image.convert("RGB")
    except FileNotFoundError as error:
        raise BadRecordError(f"{name}: {where} does not exist") from error
    except Image.DecompressionBombError as error:  # Pillow's own refusal, at twice its warning threshold
        raise BadRecordError(f"{name}: {where} is past Pillow's decompression-bomb limit ({error})") from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise BadRecordError(f"{name}: {where} cannot be decoded ({error})") from error


def _image_source(value: Any, image_folder: Path) -> Path | bytes | None:
    """Where a record's image is: a path under `image_folder`, or the bytes a `datasets` Image column holds."""
    if isinstance(value, dict):  # datasets' Image(decode=False): {"bytes": ..., "path": ...}
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    return image_folder / value if value else None


def _as_llava(record: Any, name: str, has_image: bool) -> dict[str, Any]:
    """The record in LLaVA's conversation form (captions converted)."""
    if not isinstance(record, dict):
        raise BadRecordError(f"{name}: a record must be a JSON object")
    if "conversations" in record:
        return record
    if isinstance(record.get("text"), str):
        prompt = record.get("prompt") or DEFAULT_CAPTION_PROMPT
        human = ("<image>\n" if has_image else "") + prompt
        turns = [{"from": "human", "value": human}, {"from": "gpt", "value": record["text"]}]
        return {**record, "conversations": turns}
    raise BadRecordError(f"{name}: neither 'conversations' (LLaVA) nor 'text' (caption) is present")


def _open_source(source: Any, image_column: str) -> tuple[Any, Path]:
    """The rows of `source` and the folder its image paths are relative to.

    `source` is a JSON / JSON-lines file, a folder written by `datasets.Dataset.save_to_disk`, or a `datasets.Dataset`.
    """
    if hasattr(source, "column_names"):
        rows, folder = source, Path.cwd()
    elif Path(source).is_dir():
        import datasets  # only needed for this form

        rows, folder = datasets.load_from_disk(str(source)), Path(source)
    else:
        return load_records(source), Path(source).parent
    if image_column in rows.column_names and type(rows.features[image_column]).__name__ == "Image":
        from datasets import Image as ImageFeature

        rows = rows.cast_column(image_column, ImageFeature(decode=False))  # decode when read, check when loaded
    return rows, folder


class RecordDataset(Dataset):
    """The usable records of a source as chat examples; images are decoded when an item is read.

    The source is a JSON / JSON-lines file, a `datasets` folder (`save_to_disk`) or a `datasets.Dataset`, whose rows
    are records with an image column. Every record is checked when the dataset is made (valid JSON, conversation
    form, image present, intact and within the decompression-bomb limit, embedding files present, and whatever
    `check_example(example, num_images)` checks: the collator's `check_example` checks placeholders against inputs
    and that truncation leaves a placeholder whole and some reply to learn from), so a bad one is reported with its id
    (or line) and skipped, or raised with `on_bad_record="error"`, before training starts rather than inside a
    data-loader worker. Image paths resolve against `image_folder` (default: the file's or folder's location).
    """

    def __init__(
        self,
        source: Any,
        image_folder: str | Path | None = None,
        on_bad_record: str = "skip",
        image_column: str = "image",
        check_example: Callable[[dict[str, Any], int], None] | None = None,
    ) -> None:
        if on_bad_record not in ("skip", "error"):
            raise ValueError(f"on_bad_record {on_bad_record!r} is unknown; expected 'skip' or 'error'.")
        self.rows, default_folder = _open_source(source, image_column)
        self.image_folder = Path(image_folder) if image_folder is not None else default_folder
        self.image_column = image_column
        self.usable: list[int] = []
        self.skipped: list[str] = []
        for index in range(len(self.rows)):
            try:
                name, record, image = self._read(index)
                if image is not None:
                    _open_image(image, name, decode=False)
                try:
                    example = from_llava_record(record)  # checks the turns and loads the embedding files
                    if check_example is not None:
                        check_example(example, int(image is not None))
                except ValueError as error:
                    raise BadRecordError(f"{name}: {error}") from error
            except BadRecordError as error:
                if on_bad_record == "error":
                    raise
                logger.warning("skipping %s", error)
                self.skipped.append(str(error))
                continue
            self.usable.append(index)
        if not self.usable:
            raise ValueError(f"{source} holds no usable record.")

    def _read(self, index: int) -> tuple[str, dict[str, Any], Path | bytes | None]:
        record = self.rows[index]
        if isinstance(record, MalformedLine):
            raise BadRecordError(f"line {record.line_number}: not a JSON value ({record.error})")
        name = f"record {record.get('id', index) if isinstance(record, dict) else index}"
        image = _image_source(record.get(self.image_column), self.image_folder) if isinstance(record, dict) else None
        return name, _as_llava(record, name, image is not None), image

    def __len__(self) -> int:
        return len(self.usable)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, record, image = self._read(self.usable[index])
        return from_llava_record(record, [_open_image(image, name)] if image is not None else [])
