"""Training data: record files -> chat examples with their images loaded.

Sources: a JSON list or JSON-lines file, or a Hugging Face `datasets` dataset (a `save_to_disk` folder or a
`datasets.Dataset`) with an image column. Formats, told apart per record:
- LLaVA conversations: `{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
  {"from": "gpt", "value": ...}, ...]}`, multi-turn, `"image"` optional (text-only or embeddings-only records);
- captions: `{"image", "text", "prompt"}` (`prompt` optional), one question and its answer.
Either may carry `"multimodal_data": {"multimodal_embeddings": {name: [items]}}`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..processing import IMAGE_LINE
from ..record_sources import (
    DEFAULT_CAPTION_PROMPT,
    BadRecordError,
    check_on_bad_record,
    image_source,
    open_record_image,
    open_source,
    record_name,
)
from .collator import from_llava_record

logger = logging.getLogger(__name__)


def _as_llava(record: Any, name: str, has_image: bool) -> dict[str, Any]:
    """The record in LLaVA's conversation form (captions converted)."""
    if not isinstance(record, dict):
        raise BadRecordError(f"{name}: a record must be a JSON object")
    if "conversations" in record:
        return record
    if isinstance(record.get("text"), str):
        prompt = record.get("prompt") or DEFAULT_CAPTION_PROMPT
        human = (IMAGE_LINE if has_image else "") + prompt
        turns = [{"from": "human", "value": human}, {"from": "gpt", "value": record["text"]}]
        return {**record, "conversations": turns}
    raise BadRecordError(f"{name}: neither 'conversations' (LLaVA) nor 'text' (caption) is present")


def read_record(
    record: Any, index: int, image_folder: Path, image_column: str = "image"
) -> tuple[str, dict[str, Any], Path | bytes | None]:
    """The record's name, its LLaVA form and where its image is (a path, bytes, or None); a BadRecordError when it
    is not a record in either form."""
    name = record_name(record, index)
    image = image_source(record.get(image_column), image_folder) if isinstance(record, dict) else None
    return name, _as_llava(record, name, image is not None), image


def check_record(
    record: Any,
    index: int,
    image_folder: Path,
    image_column: str = "image",
    check_example: Callable[[dict[str, Any], int], None] | None = None,
) -> tuple[str, dict[str, Any], Path | bytes | None]:
    """`read_record`, after checking that the record can be trained on: its image present, intact and within the
    decompression-bomb limit (not decoded), its turns in LLaVA's form with a non-empty reply, its embedding files
    present, and whatever `check_example(example, num_images)` checks. Raises a BadRecordError naming the record."""
    name, llava, image = read_record(record, index, image_folder, image_column)
    if image is not None:
        open_record_image(image, name, decode=False)
    try:
        example = from_llava_record(llava)  # checks the turns and loads the embedding files
        if any(not message["content"].strip() for message in example["messages"] if message["role"] == "assistant"):
            raise ValueError("an assistant reply is empty")
        if check_example is not None:
            check_example(example, int(image is not None))
    except ValueError as error:
        raise BadRecordError(f"{name}: {error}") from error
    return name, llava, image


def modality_length(record: dict[str, Any], has_image: bool) -> int:
    """LLaVA's `modality_lengths`: the words of the conversation, negative for a record without an image, so that
    length-grouped batches also keep pictures and text-only records apart."""
    words = sum(len(turn.get("value", "").split()) for turn in record.get("conversations") or [])
    return words if has_image else -words


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
        check_on_bad_record(on_bad_record)
        self.rows, default_folder = open_source(source, image_column)
        self.image_folder = Path(image_folder) if image_folder is not None else default_folder
        self.image_column = image_column
        self.usable: list[int] = []
        self.lengths: list[int] = []  # LLaVA's modality lengths of the usable records (`modality_length`)
        self.skipped: list[str] = []
        for index in range(len(self.rows)):
            try:
                _, record, image = check_record(self.rows[index], index, self.image_folder, image_column, check_example)
            except BadRecordError as error:
                if on_bad_record == "error":
                    raise
                logger.warning("skipping %s", error)
                self.skipped.append(str(error))
                continue
            self.usable.append(index)
            self.lengths.append(modality_length(record, image is not None))
        if not self.usable:
            raise ValueError(f"{source} holds no usable record.")

    def __len__(self) -> int:
        return len(self.usable)

    def __getitem__(self, index: int) -> dict[str, Any]:
        position = self.usable[index]
        name, record, image = read_record(self.rows[position], position, self.image_folder, self.image_column)
        return from_llava_record(record, [open_record_image(image, name)] if image is not None else [])
