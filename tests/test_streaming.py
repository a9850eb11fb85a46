"""Streamed training data: the shard writer, bad records met mid-run (counted, never raised), resume mid-epoch
training on each record once, peak memory that does not grow with the data set, and the demo model learning
through the streamed path."""

from __future__ import annotations

import itertools
import json
import logging
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import run_fresh_python

from llava_qwen3.training.cli import main as train
from llava_qwen3.training.shapes_recipe import shapes_accuracy, train_on_shapes
from llava_qwen3.training.shards import main as write_shards_command
from llava_qwen3.training.shards import write_shards
from llava_qwen3.training.streaming import StreamingRecords, StreamProgress, shard_files
from llava_qwen3.training.synthetic import write_dataset


def _bad_records(images: str) -> list[dict]:
    ask = [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}]
    return [
        {"id": "missing", "image": "images/nowhere.png", "conversations": ask},
        {"id": "corrupt", "image": "images/corrupt.png", "conversations": ask},
        {"id": "no-placeholder", "image": images, "conversations": [ask[0] | {"value": "Colour?"}, ask[1]]},
        {"id": "empty-reply", "image": images, "conversations": [ask[0], ask[1] | {"value": " "}]},
    ]


def test_shard_writer_leaves_bad_records_out_and_refuses_an_existing_folder(tmp_path, capsys):
    records_file = write_dataset(tmp_path / "data", number=4, split="train", seed=0)
    (tmp_path / "data" / "images" / "corrupt.png").write_bytes(b"not a png")
    records = json.loads(records_file.read_text()) + _bad_records("images/train-00000.png")
    records_file.write_text(json.dumps(records))
    arguments = [str(records_file), str(tmp_path / "data"), str(tmp_path / "shards"), "--records-per-shard", "5"]

    write_shards_command(arguments)
    printed = capsys.readouterr().out
    assert "wrote 12 records in 3 shards" in printed and "skipped 4 bad records" in printed
    manifest = json.loads((tmp_path / "shards" / "shards.json").read_text())
    assert manifest["records"] == 12 and list(manifest["shards"].values()) == [5, 5, 2]
    skipped = "\n".join(manifest["skipped"])
    for reason in ("missing: image", "corrupt: image", "no-placeholder: the text holds 0 <image>", "empty-reply: an"):
        assert f"record {reason}" in skipped, reason
    rows = pq.read_table(tmp_path / "shards" / "shard-00000.parquet").to_pylist()
    assert rows[0]["image"]["bytes"].startswith(b"\x89PNG") and rows[0]["conversations"][1]["from"] == "gpt"

    with pytest.raises(SystemExit) as stopped:
        write_shards_command(arguments)
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and error.count("\n") == 1 and "exists and is not an empty folder" in error
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .parquet shards"):
        shard_files(tmp_path / "empty")


def _shard_with_bad_rows(folder, good_records) -> None:
    """Rows as another tool may have written them: good ones with three bad ones in the middle."""
    good = pq.read_table(good_records).to_pylist()
    ask = good[0]["conversations"]
    bad = [
        {"id": "corrupt-bytes", "image": {"bytes": b"garbage", "path": None}, "conversations": ask},
        {"id": "empty-reply", "image": good[0]["image"], "conversations": [ask[0], ask[1] | {"value": ""}]},
        {"id": "no-placeholder", "image": good[0]["image"], "conversations": [ask[0] | {"value": "Hi"}, ask[1]]},
    ]
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(good[:3] + bad + good[3:6]), folder / "part-0.parquet")


def test_bad_records_met_while_streaming_are_skipped_counted_and_named(tiny_clip, tmp_path, caplog):
    records_file = write_dataset(tmp_path / "data", number=2, split="train", seed=0)
    write_shards(records_file, records_file.parent, tmp_path / "shards")
    _shard_with_bad_rows(tmp_path / "mixed", tmp_path / "shards" / "shard-00000.parquet")
    with caplog.at_level(logging.WARNING):
        train(
            [
                "--preset", "debug", f"model={tiny_clip[0]}", f"data={tmp_path / 'mixed'}",
                f"output_dir={tmp_path / 'run'}", "max_steps=3", "shuffle_buffer=1",
            ]
        )  # fmt: skip
    assert json.loads((tmp_path / "run" / "train_results.json").read_text())["skipped_records"] == 3
    for name in ("corrupt-bytes: embedded image cannot be decoded", "empty-reply: an assistant reply is empty"):
        assert f"skipping record {name}" in caplog.text
    assert "skipping record no-placeholder" in caplog.text

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        train(
            ["--preset", "debug", f"model={tiny_clip[0]}", f"data={tmp_path / 'empty'}", f"output_dir={tmp_path / 'e'}"]
        )


def test_an_interrupted_stream_resumes_mid_epoch_and_trains_on_each_record_once(tiny_clip, tmp_path, monkeypatch):
    records_file = write_dataset(tmp_path / "data", number=8, split="train", seed=0)
    write_shards(records_file, records_file.parent, tmp_path / "shards", records_per_shard=10)  # 3 shards
    trained = []
    record = StreamProgress.trained_on
    monkeypatch.setattr(
        StreamProgress, "trained_on", lambda self, rows: (trained.extend(rows.tolist()), record(self, rows))
    )
    common = [
        "--preset",
        "debug",
        f"model={tiny_clip[0]}",
        f"data={tmp_path / 'shards'}",
        "batch_size=4",
        "shuffle_buffer=6",
    ]
    train([*common, f"output_dir={tmp_path / 'run'}", "max_steps=3"])  # stopped after 12 of the 24 records
    assert json.loads((tmp_path / "run" / "checkpoint-3" / "stream_state_rank0.json").read_text())["workers"] == {
        "0": {"epoch": 0, "records": 12, "skipped": 0}
    }
    train([*common, f"output_dir={tmp_path / 'run'}", "max_steps=6", "--resume"])

    positions = [(epoch, records) for _, epoch, records, _ in trained]
    assert sorted(positions) == [(0, records) for records in range(1, 25)], positions  # every one, once
    # The stream order is the same each time it is built, so those positions are 24 different records.
    names, again = (
        [example["record"] for example in itertools.islice(StreamingRecords(tmp_path / "shards", shuffle_buffer=6), 24)]
        for _ in range(2)
    )
    assert names == again and len(set(names)) == 24
    assert names != sorted(names, key=lambda name: int(re.findall(r"\d+", name)[0]))  # shuffled


PEAK_MEMORY = """
from llava_qwen3.training.cli import main
main({arguments!r})
print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
"""


@pytest.mark.slow
def test_peak_memory_of_streamed_training_does_not_grow_with_the_records(tiny_clip, tmp_path):
    peaks = {}
    for pictures in (167, 667):  # three records each: 501 and 2,001 records
        records_file = write_dataset(tmp_path / f"data{pictures}", number=pictures, split="train", seed=0)
        shards = tmp_path / f"shards{pictures}"
        write_shards(records_file, records_file.parent, shards, records_per_shard=250)
        arguments = [
            "--preset", "debug", f"model={tiny_clip[0]}", f"data={shards}", f"output_dir={tmp_path / f'run{pictures}'}",
            "max_steps=-1", "epochs=1", "batch_size=8", "save_steps=100000", "logging_steps=1000", "shuffle_buffer=100",
        ]  # fmt: skip
        output = run_fresh_python(PEAK_MEMORY.format(arguments=arguments), tmp_path, block_package=False,
                                  env={"OMP_NUM_THREADS": "1"})  # fmt: skip
        peaks[pictures * 3] = int(output.split()[-1]) / 1024
    print(f"peak RSS (VmHWM): {peaks[501]:.1f} MiB for 501 records, {peaks[2001]:.1f} MiB for 2,001 records")
    assert peaks[2001] <= peaks[501] * 1.03 + 16, peaks


# Trains the demo recipe once more (about a minute); the image path it proves is the same on both transformers lines.
@pytest.mark.slow
@pytest.mark.one_line
def test_the_demo_model_learns_through_streamed_shards():
    model, processor = train_on_shapes(streaming=True)
    fresh = shapes_accuracy(model, processor, "train")
    unseen_pairs = shapes_accuracy(model, processor, "held_out")
    print(f"streamed: fresh pictures {fresh}, unseen colour-shape pairs {unseen_pairs}")
    assert all(value >= 0.9 for value in fresh.values()), fresh
