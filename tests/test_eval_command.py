"""The eval command on a tiny checkpoint: record forms and sources, outputs, resuming after a crash without losing a
prediction, bad records by id, the command line and the model card's evaluation section."""

from __future__ import annotations

import json

import datasets
import pytest
from helpers import draw_image

from llava_qwen3.evaluation import evaluate, load_eval_set
from llava_qwen3.evaluation.cli import main
from llava_qwen3.hub import write_model_card
from llava_qwen3.inference.torch_backend import TorchBackend
from llava_qwen3.record_sources import BadRecordError


@pytest.fixture(scope="module")
def backend(tiny_clip):
    _, model, processor = tiny_clip
    return TorchBackend(model, processor)


def _write_records(folder, count: int = 7) -> str:
    """VQA records in all three forms: LLaVA conversations, VQAv2-style questions with ten answers, and JSONL."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(count):
        draw_image(index).save(folder / "images" / f"{index}.png")
        if index % 2:
            turns = [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "red"}]
            records.append({"id": f"c{index}", "image": f"images/{index}.png", "conversations": turns})
        else:
            answers = [{"answer": "red", "answer_id": n} for n in range(10)]
            records.append(
                {"question_id": index, "image": f"images/{index}.png", "question": "Colour?", "answers": answers}
            )
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


class _CrashingBackend:
    """Passes `calls` generate() calls to a backend, then fails the way a killed run would."""

    def __init__(self, backend, calls: int) -> None:
        self.backend, self.calls = backend, calls
        self.name, self.processor = backend.name, backend.processor

    def generate(self, requests):
        if self.calls == 0:
            raise RuntimeError("the machine went away")
        self.calls -= 1
        return self.backend.generate(requests)


def test_a_run_writes_predictions_scores_and_a_table(backend, tmp_path):
    data = _write_records(tmp_path)
    report = evaluate(backend, data, tmp_path / "out", model="tiny", batch_size=3, max_new_tokens=4, progress=False)
    assert report.records == report.scored == 7 and not report.skipped
    rows = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [row["id"] for row in rows] == ["0", "c1", "2", "c3", "4", "c5", "6"]
    assert rows[0]["references"] == ["red"] * 10 and rows[1]["question"] == "<image>\nWhat colour?"
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert scores["metrics"] == report.metrics and 0.0 <= report.metrics["accuracy"] <= 1.0
    assert scores["backend"] == "torch" and scores["max_new_tokens"] == 4
    table = (tmp_path / "out" / "results.md").read_text()
    assert table.startswith("### data.jsonl (torch, ") and "| VQA accuracy |" in table
    # Deterministic: the same run into another folder predicts the same text.
    again = evaluate(backend, data, tmp_path / "again", batch_size=2, max_new_tokens=4, progress=False)
    assert json.loads((tmp_path / "again" / "predictions.json").read_text()) == rows
    assert again.metrics == report.metrics


def test_a_crashed_run_resumes_without_losing_or_redoing_a_prediction(backend, tmp_path):
    data = _write_records(tmp_path)
    settings = dict(model="tiny", batch_size=2, max_new_tokens=4, progress=False)
    with pytest.raises(RuntimeError, match="went away"):
        evaluate(_CrashingBackend(backend, calls=2), data, tmp_path / "out", **settings)
    log = tmp_path / "out" / "predictions.jsonl"
    saved = log.read_text().splitlines()
    assert len(saved) == 4  # the two batches made before the crash are on disk
    with open(log, "a") as file:
        file.write('{"id": "4", "prediction": ""}')  # a line cut short by the crash, before its newline
    resumed = _CrashingBackend(backend, calls=2)  # the three records left take two batches
    report = evaluate(resumed, data, tmp_path / "out", **settings)
    assert resumed.calls == 0
    assert log.read_text().splitlines()[:4] == saved
    uninterrupted = evaluate(backend, data, tmp_path / "whole", **settings)
    assert (tmp_path / "out" / "predictions.json").read_text() == (tmp_path / "whole" / "predictions.json").read_text()
    assert report.metrics == uninterrupted.metrics
    # Done is done: a rerun generates nothing.
    evaluate(_CrashingBackend(backend, calls=0), data, tmp_path / "out", **settings)
    with pytest.raises(ValueError, match="differs in max_new_tokens"):
        evaluate(backend, data, tmp_path / "out", **{**settings, "max_new_tokens": 5})


def test_bad_records_are_reported_by_id_and_skipped_or_fatal(backend, tmp_path):
    draw_image(0).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    records = [
        {"id": "good", "image": "good.png", "question": "Colour?", "answers": ["red"]},
        {"id": "no-image", "question": "Colour?", "answers": ["red"]},
        {"id": "no-reference", "image": "good.png", "question": "Colour?", "answers": []},
        {"id": "blank-reference", "image": "good.png", "text": "  "},
        {"id": "corrupt", "image": "broken.png", "question": "Colour?", "answers": ["red"]},
        {"id": "good", "image": "good.png", "question": "Again?", "answers": ["red"]},
        {"id": "odd", "image": "good.png", "prompt": "?"},
    ]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    loaded = load_eval_set(data)
    assert [item.id for item in loaded.items] == ["good"]
    assert [message.split(":")[0] for message in loaded.skipped] == [
        "record no-image",
        "record no-reference",
        "record blank-reference",
        "record corrupt",
        "record good",
        "record odd",
    ]
    assert "no image" in loaded.skipped[0] and "more than once" in loaded.skipped[4]
    with pytest.raises(BadRecordError, match="record no-image: no image"):
        load_eval_set(data, on_bad_record="error")

    # An empty prediction: a model that stops at once. Left out of the scores, or fatal, after it is saved.
    class _Silent:
        name, processor = backend.name, backend.processor

        def generate(self, requests):
            generations = backend.generate(requests)
            for generation in generations:
                generation.text = ""
            return generations

    data.write_text(json.dumps(records[:1] + [{**records[0], "id": "other"}]))
    with pytest.raises(ValueError, match="no prediction .* could be scored"):
        evaluate(_Silent(), data, tmp_path / "silent", max_new_tokens=2, progress=False)
    with pytest.raises(BadRecordError, match="record good: the prediction is empty"):
        evaluate(_Silent(), data, tmp_path / "fatal", max_new_tokens=2, progress=False, on_bad_record="error")
    assert len((tmp_path / "fatal" / "predictions.jsonl").read_text().splitlines()) == 2


def test_datasets_folders_with_embedded_images_and_caption_records(backend, tmp_path):
    rows = {
        "id": ["a", "b"],
        "image": [draw_image(1), draw_image(2)],
        "captions": [["a red ball", "a ball"], ["two dogs"]],
    }
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "captions"))
    loaded = load_eval_set(tmp_path / "captions")
    assert [(item.kind, item.references) for item in loaded.items] == [
        ("caption", ("a red ball", "a ball")),
        ("caption", ("two dogs",)),
    ]
    assert loaded.items[0].question == "<image>\nDescribe the picture."
    assert loaded.items[0].load_image().size == draw_image(1).size
    as_vqa = load_eval_set(tmp_path / "captions", task="vqa")
    assert {item.kind for item in as_vqa.items} == {"vqa"}
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "splits"))
    with pytest.raises(ValueError, match="splits test; pass the folder of one split"):
        load_eval_set(tmp_path / "splits")


def test_the_command_evaluates_into_the_checkpoint_and_the_model_card_shows_the_table(tiny_clip, tmp_path, capsys):
    folder, _, _ = tiny_clip
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    for path in folder.iterdir():
        (checkpoint / path.name).write_bytes(path.read_bytes())
    data = _write_records(tmp_path / "data", count=3)
    main([str(checkpoint), data, "--max-new-tokens", "3", "--batch-size", "2"])
    printed = capsys.readouterr().out
    run = checkpoint / "eval" / "data-torch"
    assert {path.name for path in run.iterdir()} == {
        "run.json",
        "predictions.jsonl",
        "predictions.json",
        "scores.json",
        "results.md",
    }
    table = (run / "results.md").read_text()
    assert table in printed
    card = write_model_card(checkpoint, "org/tiny").read_text()
    assert "## Evaluation" in card and table in card

    with pytest.raises(SystemExit) as exit_info:
        main([str(checkpoint), str(tmp_path / "missing.json")])
    assert exit_info.value.code == 2
    assert "data file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(checkpoint), data, "--variant", "fp32"])
    assert "--variant picks ONNX graphs; it needs the onnx backend" in capsys.readouterr().err
