"""Training data: record files -> chat examples with their images loaded.

Formats, told apart per record:
- LLaVA conversations: `{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
  {"from": "gpt", "value": ...}, ...]}`, multi-turn, `"image"` optional (text-only or embeddings-only records);
- captions: `{"image", "text", "prompt"}` (`prompt` optional), one question and its answer.
Either may carry `"multimodal_data": {"multimodal_embeddings": {name: [items]}}`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .collator import from_llava_record

logger = logging.getLogger(__name__)
DEFAULT_CAPTION_PROMPT = "Describe the picture."


class BadRecordError(ValueError):
    """A record that cannot be used, named by its id or index."""


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON list file or a JSON-lines file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise ValueError(f"data file {path} is not JSON or JSON lines: {error}") from error


def _open_image(path: Path, name: str, decode: bool = True) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            if not decode:
                image.verify()  # reads the headers and checks the file's integrity without decoding pixels
                return None
            return image.convert("RGB")
    except FileNotFoundError as error:
        raise BadRecordError(f"{name}: image {path} does not exist") from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise BadRecordError(f"{name}: image {path} cannot be decoded ({error})") from error


def _as_llava(record: Any, name: str) -> dict[str, Any]:
    """The record in LLaVA's conversation form (captions converted)."""
    if not isinstance(record, dict):
        raise BadRecordError(f"{name}: a record must be a JSON object")
    if "conversations" in record:
        return record
    if isinstance(record.get("text"), str):
        prompt = record.get("prompt") or DEFAULT_CAPTION_PROMPT
        human = ("<image>\n" if record.get("image") else "") + prompt
        turns = [{"from": "human", "value": human}, {"from": "gpt", "value": record["text"]}]
        return {**record, "conversations": turns}
    raise BadRecordError(f"{name}: neither 'conversations' (LLaVA) nor 'text' (caption) is present")


class RecordDataset(Dataset):
    """The usable records of a file as chat examples; images are decoded when an item is read.

    Every record is checked when the dataset is made (conversation form, image present and intact, embedding files
    present), so a bad one is reported with its id and skipped, or raised with `on_bad_record="error"`, before
    training starts rather than inside a data-loader worker. Images resolve against `image_folder` (default: the
    file's folder).
    """

    def __init__(self, path: str | Path, image_folder: str | Path | None = None, on_bad_record: str = "skip") -> None:
        if on_bad_record not in ("skip", "error"):
            raise ValueError(f"on_bad_record {on_bad_record!r} is unknown; expected 'skip' or 'error'.")
        self.image_folder = Path(image_folder) if image_folder is not None else Path(path).parent
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.skipped: list[str] = []
        for index, record in enumerate(load_records(path)):
            name = f"record {record.get('id', index) if isinstance(record, dict) else index}"
            try:
                record = _as_llava(record, name)
                if record.get("image"):
                    _open_image(self.image_folder / record["image"], name, decode=False)
                from_llava_record(record)  # checks the turns and loads the embedding files
            except (BadRecordError, ValueError) as error:
                message = str(error) if str(error).startswith(name) else f"{name}: {error}"
                if on_bad_record == "error":
                    raise BadRecordError(message) from error
                logger.warning("skipping %s", message)
                self.skipped.append(message)
                continue
            self.records.append((name, record))
        if not self.records:
            raise ValueError(f"{path} holds no usable record.")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, record = self.records[index]
        images = [_open_image(self.image_folder / record["image"], name)] if record.get("image") else []
        return from_llava_record(record, images)
