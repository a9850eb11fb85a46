"""Evaluation records: the sources training reads (JSON / JSON-lines files, `datasets` folders with an image column),
read as questions with reference answers, or pictures with reference captions.

Record forms, told apart per record (every one needs an image):
- LLaVA conversations `{"id", "image", "conversations": [{"from": "human", ...}, {"from": "gpt", ...}]}`: one
  question and its answer; the gpt turn is the reference unless `"answers"` lists them (VQA's ten human answers);
- VQA records `{"question_id" or "id", "image", "question", "answers": [...]}`, answers as strings or as VQAv2's
  `{"answer": ...}` objects, with an optional `"question_type"`;
- captions `{"id", "image", "text" or "captions": [...], "prompt"}` (`prompt` optional).
Questions are scored as VQA and captions with the captioning metrics; `"question_type"` names the breakdown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..processing import IMAGE_LINE, IMAGE_TOKEN
from ..record_sources import (
    DEFAULT_CAPTION_PROMPT,
    BadRecordError,
    check_on_bad_record,
    image_source,
    open_record_image,
    open_source,
    record_name,
)

logger = logging.getLogger(__name__)
TASKS = ("auto", "vqa", "caption")


@dataclass(frozen=True)
class EvalItem:
    """One thing to generate for and score: the user's text (with its `<image>` placeholder), the image, and the
    reference answers or captions."""

    id: str
    kind: str  # "vqa" or "caption"
    question: str
    references: tuple[str, ...]
    image: Path | bytes = field(repr=False)
    question_type: str | None = None

    def load_image(self) -> Image.Image:
        """The decoded RGB image (a `BadRecordError` naming the record when it cannot be decoded)."""
        return open_record_image(self.image, f"record {self.id}")


@dataclass
class EvalSet:
    """The usable items of a source, in source order, and the messages of the records left out."""

    items: list[EvalItem]
    skipped: list[str]


def load_eval_set(
    source: Any,
    task: str = "auto",
    image_folder: str | Path | None = None,
    on_bad_record: str = "skip",
    image_column: str = "image",
) -> EvalSet:
    """The evaluation items of `source` (a JSON / JSON-lines file, a `datasets` folder or a `datasets.Dataset`).

    `task` "auto" scores questions as VQA and captions as captions; "vqa" or "caption" scores every record so. A
    record without an image, a reference, or a readable form is reported with its id and skipped, or raised as a
    `BadRecordError` with `on_bad_record="error"`, before anything is generated.
    """
    if task not in TASKS:
        raise ValueError(f"task {task!r} is unknown; expected one of {', '.join(TASKS)}.")
    check_on_bad_record(on_bad_record)
    rows, default_folder = open_source(source, image_column)
    folder = Path(image_folder) if image_folder is not None else default_folder
    items: list[EvalItem] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for index in range(len(rows)):
        try:
            item = _read(rows[index], index, task, folder, image_column)
            if item.id in seen:
                raise BadRecordError(f"record {item.id}: the id appears more than once; ids must be unique")
            open_record_image(item.image, f"record {item.id}", decode=False)
        except BadRecordError as error:
            if on_bad_record == "error":
                raise
            logger.warning("skipping %s", error)
            skipped.append(str(error))
            continue
        seen.add(item.id)
        items.append(item)
    if not items:
        raise ValueError(f"{source} holds no usable record.")
    return EvalSet(items, skipped)


def with_image_placeholders(text: str, images: int) -> str:
    """`text` with one `<image>` line per image in front, unless it places its images itself (as LLaVA records do)."""
    return text if IMAGE_TOKEN in text else IMAGE_LINE * images + text


def _read(record: Any, index: int, task: str, folder: Path, image_column: str) -> EvalItem:
    record_name(record, index)  # a malformed JSON line raises here, named by its line number
    if not isinstance(record, dict):
        raise BadRecordError(f"record {index}: a record must be a JSON object")
    key = record.get("id", record.get("question_id"))
    item_id = str(index if key is None else key)
    name = f"record {item_id}"
    question, references, kind = _question_and_references(record, name)
    if task != "auto":
        kind = task
    if not references or not all(isinstance(text, str) and text.strip() for text in references):
        raise BadRecordError(f"{name}: no reference answer or caption to score against")
    image = image_source(record.get(image_column), folder)
    if image is None:
        raise BadRecordError(f"{name}: no image ('{image_column}' is missing or empty)")
    question = with_image_placeholders(question, 1)
    question_type = record.get("question_type")
    return EvalItem(item_id, kind, question, tuple(references), image, question_type or None)


def _question_and_references(record: dict[str, Any], name: str) -> tuple[str, list[Any], str]:
    """The user's text, the references and the kind ("vqa" or "caption") of one record."""
    if "conversations" in record:
        turns = record["conversations"]
        questions = [turn for turn in turns if isinstance(turn, dict) and turn.get("from") in ("human", "user")]
        answers = [turn for turn in turns if isinstance(turn, dict) and turn.get("from") in ("gpt", "assistant")]
        if len(questions) != 1 or len(answers) != 1 or not isinstance(questions[0].get("value"), str):
            raise BadRecordError(f"{name}: evaluation takes one question and its answer per conversation")
        references = record["answers"] if "answers" in record else [answers[0].get("value")]
        return questions[0]["value"], _answer_texts(references), "vqa"
    if "question" in record:
        if not isinstance(record["question"], str):
            raise BadRecordError(f"{name}: 'question' must be a string")
        return record["question"], _answer_texts(record.get("answers") or record.get("answer")), "vqa"
    if "captions" in record or "text" in record:
        captions = record.get("captions", record.get("text"))
        return record.get("prompt") or DEFAULT_CAPTION_PROMPT, _answer_texts(captions), "caption"
    raise BadRecordError(f"{name}: neither 'conversations', 'question' nor 'text'/'captions' is present")


def _answer_texts(value: Any) -> list[Any]:
    """Reference texts from a string, a list of strings, or VQAv2's list of `{"answer": ...}` objects."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [entry.get("answer") if isinstance(entry, dict) else entry for entry in value]
    return [value]
