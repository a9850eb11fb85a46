"""Training data: LLaVA conversations and captions from files, images resolved against a folder, bad records
reported with their id and skipped or fatal, the synthetic shapes dataset."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from llava_qwen3.training.data import BadRecordError, RecordDataset
from llava_qwen3.training.synthetic import HELD_OUT_PAIRS, draw_scene, random_scenes, write_dataset


def test_llava_and_caption_records_become_chat_examples(tmp_path):
    json_path = write_dataset(tmp_path / "shapes", number=4, split="train", seed=0)
    records = json.loads(json_path.read_text())
    records.append({"id": "cap", "image": records[0]["image"], "text": "two red circles", "prompt": "Caption it."})
    records.append(
        {"id": "text-only", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    )
    (tmp_path / "mixed.jsonl").write_text("\n".join(json.dumps(record) for record in records))

    dataset = RecordDataset(tmp_path / "mixed.jsonl", image_folder=tmp_path / "shapes")
    assert len(dataset) == len(records) and dataset.skipped == []
    first = dataset[0]
    assert first["messages"][0] == {"role": "user", "content": "<image>\nWhat colour are the shapes?"}
    assert isinstance(first["images"][0], Image.Image) and first["images"][0].mode == "RGB"
    caption = dataset[len(records) - 2]
    assert caption["messages"] == [
        {"role": "user", "content": "<image>\nCaption it."},
        {"role": "assistant", "content": "two red circles"},
    ]
    assert dataset[len(records) - 1]["images"] == []


def test_bad_records_are_reported_with_their_id_and_skipped_or_fatal(tmp_path, caplog):
    write_dataset(tmp_path, number=2, split="train", seed=0)
    (tmp_path / "images" / "corrupt.png").write_bytes(b"not a png at all")
    good = {"id": "good", "image": "images/train-00000.png", "text": "fine"}
    records = [
        good,
        {"id": "missing", "image": "images/nowhere.png", "text": "x"},
        {"id": "corrupt", "image": "images/corrupt.png", "text": "x"},
        {
            "id": "no-answer",
            "conversations": [{"from": "human", "value": "<image>\nHi"}],
            "image": "images/train-00000.png",
        },
        {"id": "unknown-form", "caption": "x"},
    ]
    (tmp_path / "records.json").write_text(json.dumps(records))
    dataset = RecordDataset(tmp_path / "records.json")
    assert len(dataset) == 1
    skipped = "\n".join(dataset.skipped)
    assert "record missing: image" in skipped and "does not exist" in skipped
    assert "record corrupt: image" in skipped and "cannot be decoded" in skipped
    assert "record no-answer: the record has no assistant turn" in skipped
    assert "record unknown-form: neither 'conversations'" in skipped
    assert "skipping record corrupt" in caplog.text
    with pytest.raises(BadRecordError, match="record missing: image .* does not exist"):
        RecordDataset(tmp_path / "records.json", on_bad_record="error")
    with pytest.raises(ValueError, match="does not exist"):
        RecordDataset(tmp_path / "nothing.json")


def test_synthetic_held_out_split_holds_only_pairs_never_seen_in_training(tmp_path):
    train = random_scenes(300, "train", seed=0)
    held_out = random_scenes(100, "held_out", seed=1)
    assert not {(s.colour, s.kind) for s in train} & HELD_OUT_PAIRS
    assert {(s.colour, s.kind) for s in held_out} == HELD_OUT_PAIRS
    assert {s.count for s in train} == {1, 2, 3} and all(len(s.cells) == s.count for s in train)
    image = draw_scene(train[0])
    colours = {pixel for pixel in image.getdata()}
    assert (255, 255, 255) in colours and len(colours) >= 2  # shapes drawn on white


def test_a_datasets_folder_with_an_image_column(tmp_path):
    import io

    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    def png(colour: str) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (20, 20), colour).save(buffer, format="PNG")
        return buffer.getvalue()

    turn = {"from": Value("string"), "value": Value("string")}
    features = Features({"id": Value("string"), "image": ImageFeature(), "conversations": [turn]})
    rows = {
        "id": ["red", "broken", "blue"],
        "image": [
            {"bytes": png("red"), "path": None},
            {"bytes": b"garbage", "path": None},
            {"bytes": png("blue"), "path": None},
        ],
        "conversations": [
            [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": colour}]
            for colour in ("red", "?", "blue")
        ],
    }
    Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "hf"))

    dataset = RecordDataset(tmp_path / "hf")
    assert len(dataset) == 2
    assert (
        dataset.skipped == [dataset.skipped[0]]
        and "record broken: embedded image cannot be decoded" in dataset.skipped[0]
    )
    example = dataset[1]
    assert example["images"][0].getpixel((5, 5)) == (0, 0, 255)
    assert example["messages"][1] == {"role": "assistant", "content": "blue"}
