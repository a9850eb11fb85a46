"""Evaluate a model on a record source through an inference backend: generate, save, score, report.

An output folder holds one run:

    run.json           what was evaluated (data, model, backend, variant, task, max_new_tokens)
    predictions.jsonl  one line per record, appended and synced to disk batch by batch as predictions are made
    predictions.json   every record with its question, references, prediction and (for VQA) its score
    scores.json        the metrics, the record counts and the records left out with the reason
    results.md         the metrics as a Markdown table (the model card's evaluation section shows it)

A rerun into the same folder skips the records already in predictions.jsonl, so an interrupted run resumes where it
stopped and loses nothing it had made; a run of other settings is refused rather than mixed in. Decoding is greedy,
so a run is deterministic.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..eval_results import TABLE_FILE
from ..inference import GenerationRequest, GenerationSettings, InferenceBackend
from ..record_sources import BadRecordError
from .captioning import SPICE_LEFT_OUT, CaptionScorer
from .data import EvalItem, load_eval_set
from .vqa import vqa_accuracy, vqa_scores

logger = logging.getLogger(__name__)

RUN_FILE, PREDICTIONS_LOG, PREDICTIONS_FILE, SCORES_FILE = (
    "run.json",
    "predictions.jsonl",
    "predictions.json",
    "scores.json",
)
# How the table names each metric; papers report them x100.
METRIC_LABELS = {
    "accuracy": "VQA accuracy",
    "Bleu_1": "BLEU-1",
    "Bleu_2": "BLEU-2",
    "Bleu_3": "BLEU-3",
    "Bleu_4": "BLEU-4",
    "METEOR": "METEOR",
    "ROUGE_L": "ROUGE-L",
    "CIDEr": "CIDEr-D",
}


@dataclass(frozen=True)
class EvalRun:
    """What one evaluation run is; a rerun into the same folder must describe the same run."""

    data: str
    model: str
    backend: str
    variant: str | None
    task: str
    max_new_tokens: int


@dataclass
class EvalReport:
    """The outcome of a run: its metrics, counts, the records left out, and where the files are."""

    run: EvalRun
    metrics: dict[str, float]
    records: int
    scored: int
    skipped: list[str]
    notes: list[str]
    output: Path

    def markdown(self) -> str:
        """The metrics as a Markdown table, values x100 as papers report them."""
        variant = f" {self.run.variant}" if self.run.variant else ""
        lines = [
            f"### {Path(self.run.data).name} ({self.run.backend}{variant}, {self.scored} of {self.records} records)",
            "",
            "| metric | value (x100) |",
            "| --- | --- |",
        ]
        for name, value in self.metrics.items():
            base, _, breakdown = name.partition("/")
            label = METRIC_LABELS.get(base, base) + (f" ({breakdown})" if breakdown else "")
            lines.append(f"| {label} | {100 * value:.2f} |")
        lines += ["", *self.notes]
        return "\n".join(lines).rstrip() + "\n"


def evaluate(
    backend: InferenceBackend,
    data: Any,
    output: str | Path,
    *,
    model: str = "",
    variant: str | None = None,
    task: str = "auto",
    image_folder: str | Path | None = None,
    image_column: str = "image",
    on_bad_record: str = "skip",
    batch_size: int = 8,
    max_new_tokens: int = 32,
    limit: int | None = None,
    progress: bool = True,
) -> EvalReport:
    """Generates greedily for every usable record of `data` on `backend` (in batches of `batch_size`), saving each
    prediction as it is made in `output`, then scores them and writes the predictions, scores and table there.

    `model` and `variant` only describe the run (they are recorded and shown). A record left out at loading (no image,
    no reference), whose generation failed, or whose prediction is empty is reported with its id and left out of the
    scores; with `on_bad_record="error"` it raises a `BadRecordError` instead (after the predictions made so far are
    saved). `limit` evaluates the first records only.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    settings = GenerationSettings(max_new_tokens=max_new_tokens)  # checked before anything runs
    output = Path(output)
    run = EvalRun(_describe(data), model, backend.name, variant, task, max_new_tokens)
    loaded = load_eval_set(data, task, image_folder, on_bad_record, image_column)
    items = loaded.items[:limit] if limit is not None else loaded.items
    _claim_folder(output, run)
    predictions = _read_predictions(output / PREDICTIONS_LOG)
    pending = [item for item in items if item.id not in predictions]
    with (
        open(output / PREDICTIONS_LOG, "a", encoding="utf-8") as log,
        tqdm(total=len(items), initial=len(items) - len(pending), desc="evaluating", disable=not progress) as bar,
    ):
        for batch in _batches(pending, batch_size):
            for item, line in zip(batch, _generate(backend, batch, settings), strict=True):
                predictions[item.id] = line
                log.write(json.dumps(line, ensure_ascii=False) + "\n")
            log.flush()
            os.fsync(log.fileno())  # a crash after this loses nothing made so far
            bar.update(len(batch))
    return _score(run, items, predictions, loaded.skipped, output, on_bad_record)


def _describe(data: Any) -> str:
    """How a run names its data: the absolute path of a file or folder (so a rerun from elsewhere matches)."""
    if isinstance(data, (str, Path)):
        return str(Path(data).resolve())
    return f"{type(data).__name__} of {len(data)} rows"


def question_record(backend: InferenceBackend, question: str, images: list[Any]) -> dict[str, Any]:
    """The generation record of a user's question (with its `<image>` placeholders) about `images`: the question as
    the one user turn of the model's chat template, followed by the assistant's turn to answer."""
    prompt = backend.processor.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    return {"text": prompt, "images": images}


def _claim_folder(output: Path, run: EvalRun) -> None:
    """Makes `output` this run's folder, or refuses one that holds another run's predictions."""
    output.mkdir(parents=True, exist_ok=True)
    run_file = output / RUN_FILE
    if run_file.is_file():
        recorded = json.loads(run_file.read_text())
        if recorded != asdict(run):
            changed = sorted(key for key in asdict(run) if recorded.get(key) != asdict(run)[key])
            raise ValueError(
                f"{output} holds predictions of another run (it differs in {', '.join(changed)}); resume with the "
                "same settings, or pass another output folder."
            )
    else:
        run_file.write_text(json.dumps(asdict(run), indent=1) + "\n")


def _read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """The predictions saved by earlier runs, by id. A last line cut short by a crash (no newline yet, or not JSON) is
    dropped and cut from the file, so its record is generated again and the next line starts on a line of its own."""
    if not path.is_file():
        return {}
    predictions = {}
    kept_bytes = 0
    with open(path, "rb") as log:
        for raw in log:
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("no newline")
                line = json.loads(raw)
            except ValueError:  # JSONDecodeError is one
                logger.warning("dropping an incomplete line at the end of %s (an interrupted write)", path)
                break
            predictions[line["id"]] = line
            kept_bytes += len(raw)
    with open(path, "rb+") as log:
        log.truncate(kept_bytes)
    return predictions


def _batches(items: Sequence[EvalItem], size: int) -> Iterator[Sequence[EvalItem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _generate(
    backend: InferenceBackend, batch: Sequence[EvalItem], settings: GenerationSettings
) -> list[dict[str, Any]]:
    """One saved line per item: the prediction, or the reason there is none."""
    requests, failed = [], {}
    for item in batch:
        try:
            image = item.load_image()
        except BadRecordError as error:
            failed[item.id] = str(error)
            continue
        requests.append(GenerationRequest(question_record(backend, item.question, [image]), settings))
    generations = iter(backend.generate(requests) if requests else [])
    lines = []
    for item in batch:
        generation = None if item.id in failed else next(generations)
        error = failed.get(item.id) or (generation.error if generation else None)
        lines.append(
            {
                "id": item.id,
                "prediction": generation.text if generation else "",
                "finish_reason": generation.finish_reason if generation else "error",
                "error": error,
            }
        )
    return lines


def _score(
    run: EvalRun,
    items: list[EvalItem],
    predictions: dict[str, dict[str, Any]],
    skipped: list[str],
    output: Path,
    on_bad_record: str,
) -> EvalReport:
    """Scores the usable predictions and writes predictions.json, scores.json and results.md."""
    skipped = list(skipped)
    usable: list[EvalItem] = []
    for item in items:
        problem = _unusable(predictions[item.id])
        if problem:
            message = f"record {item.id}: {problem}"
            if on_bad_record == "error":
                raise BadRecordError(message)
            logger.warning("leaving out %s", message)
            skipped.append(message)
        else:
            usable.append(item)
    questions = [item for item in usable if item.kind == "vqa"]
    captions = [item for item in usable if item.kind == "caption"]
    metrics: dict[str, float] = {}
    notes: list[str] = []
    if questions:
        metrics.update(vqa_scores((predictions[i.id]["prediction"], i.references, i.question_type) for i in questions))
    if captions:
        with CaptionScorer() as scorer:
            metrics.update(
                scorer.score(
                    {item.id: predictions[item.id]["prediction"] for item in captions},
                    {item.id: list(item.references) for item in captions},
                )
            )
        notes.append(SPICE_LEFT_OUT)
    if not usable:
        raise ValueError(f"no prediction of {run.data} could be scored; see the records left out: {skipped[:3]}")
    report = EvalReport(run, metrics, len(items), len(usable), skipped, notes, output)
    _write_outputs(report, items, predictions)
    return report


def _unusable(line: dict[str, Any]) -> str | None:
    """Why a saved prediction cannot be scored, or None."""
    if line["error"]:
        return f"generation failed: {line['error']}"
    if not line["prediction"].strip():
        return "the prediction is empty"
    return None


def _write_outputs(report: EvalReport, items: list[EvalItem], predictions: dict[str, dict[str, Any]]) -> None:
    rows = []
    for item in items:
        line = predictions[item.id]
        row = {
            "id": item.id,
            "kind": item.kind,
            "question": item.question,
            "references": list(item.references),
            "prediction": line["prediction"],
            "question_type": item.question_type,
            "error": line["error"],
        }
        if item.kind == "vqa" and not _unusable(line):
            row["accuracy"] = vqa_accuracy(line["prediction"], item.references)
        rows.append(row)
    output = report.output
    (output / PREDICTIONS_FILE).write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    scores = {
        **asdict(report.run),
        "records": report.records,
        "scored": report.scored,
        "metrics": report.metrics,
        "skipped": report.skipped,
        "notes": report.notes,
    }
    (output / SCORES_FILE).write_text(json.dumps(scores, indent=1) + "\n")
    (output / TABLE_FILE).write_text(report.markdown())
