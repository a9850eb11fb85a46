"""The `llava_qwen3_shapes` lmms-eval task's functions and its data.

lmms-eval loads this file by path (`!function shapes.<name>` in the YAML), so it imports the package absolutely.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from llava_qwen3.evaluation.vqa import vqa_accuracy
from llava_qwen3.training.synthetic import QUESTIONS, draw_scene, random_scenes

# The YAML's dataset_path. Not the task's name: lmms-eval reads `--tasks NAME` as a folder of task YAMLs when the
# working directory holds a folder of that name.
DATASET_FOLDER = "llava_qwen3_shapes_data"
SPLIT = "test"  # the YAML's test_split


def write_task_data(folder: str | Path, number: int = 60, split: str = "held_out", seed: int = 7) -> Path:
    """Writes the task's data, one question per attribute about `number` pictures of `split` (the unseen colour-shape
    pairs by default), as a `datasets` folder `folder/llava_qwen3_shapes_data` with one `test` split; returns the
    split's folder, which `llava-qwen3-eval` reads as it is."""
    import datasets

    rows: dict[str, list[Any]] = {"id": [], "image": [], "question": [], "answers": [], "question_type": []}
    for index, scene in enumerate(random_scenes(number, split, seed)):
        image = draw_scene(scene)
        for attribute, question in QUESTIONS.items():
            rows["id"].append(f"{split}-{index}-{attribute}")
            rows["image"].append(image)
            rows["question"].append(question)
            rows["answers"].append([scene.answer(attribute)])
            rows["question_type"].append(attribute)
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answers": datasets.Sequence(datasets.Value("string")),
            "question_type": datasets.Value("string"),
        }
    )
    path = Path(folder) / DATASET_FOLDER
    datasets.DatasetDict({SPLIT: datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(str(path))
    return path / SPLIT


def doc_to_visual(doc: dict[str, Any]) -> list[Image.Image]:
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    return doc["question"]


def doc_to_target(doc: dict[str, Any]) -> str:
    return doc["answers"][0]


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """The VQA accuracy of the one generated answer."""
    return {"accuracy": vqa_accuracy(results[0], doc["answers"])}
