"""A synthetic grounded dataset: pictures of coloured shapes drawn with Pillow, with captions and questions.

Each picture shows `count` shapes of one `kind` and one `colour` in random cells of a grid. Some (colour, kind)
pairs never occur in the training split; the held-out split holds only those, so a model must compose what it saw.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from ..processing import IMAGE_LINE
from ..record_sources import DEFAULT_CAPTION_PROMPT

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
KINDS = ("circle", "square", "triangle")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
QUESTIONS = {
    "colour": "What colour are the shapes?",
    "kind": "What shape are they?",
    "count": "How many shapes are there?",
}
# What a picture can be asked: the attribute questions and a caption.
TASKS = (*QUESTIONS, "caption")
# Held out: each colour misses one kind in training.
HELD_OUT_PAIRS = {("red", "triangle"), ("green", "circle"), ("blue", "square"), ("yellow", "triangle")}


@dataclass(frozen=True)
class Scene:
    """What one picture shows."""

    colour: str
    kind: str
    count: int
    cells: tuple[int, ...]

    def answer(self, attribute: str) -> str:
        return {"colour": self.colour, "kind": self.kind, "count": COUNT_WORDS[self.count]}[attribute]

    def caption(self) -> str:
        """E.g. "there are three green squares": five words, so BLEU-4 has 4-grams to count, and all but "there" tell
        what the picture shows."""
        verb, plural = ("are", "s") if self.count > 1 else ("is", "")
        return f"there {verb} {COUNT_WORDS[self.count]} {self.colour} {self.kind}{plural}"


def draw_scene(scene: Scene, size: int = 64, grid: int = 2) -> Image.Image:
    """The picture of `scene`: white background, shapes centred in the chosen grid cells."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    cell = size // grid
    margin = cell // 6
    for index in scene.cells:
        left, top = (index % grid) * cell + margin, (index // grid) * cell + margin
        right, bottom = left + cell - 2 * margin, top + cell - 2 * margin
        fill = COLOURS[scene.colour]
        if scene.kind == "circle":
            draw.ellipse((left, top, right, bottom), fill=fill)
        elif scene.kind == "square":
            draw.rectangle((left, top, right, bottom), fill=fill)
        else:
            draw.polygon([((left + right) // 2, top), (left, bottom), (right, bottom)], fill=fill)
    return image


def random_scenes(number: int, split: str, seed: int, grid: int = 2) -> list[Scene]:
    """`number` scenes of the `train` split (held-out pairs excluded) or the `held_out` split (only those)."""
    if split not in ("train", "held_out"):
        raise ValueError(f"split {split!r} is unknown; expected 'train' or 'held_out'.")
    rng = random.Random(seed)
    pairs = [(c, k) for c in COLOURS for k in KINDS if ((c, k) in HELD_OUT_PAIRS) == (split == "held_out")]
    scenes = []
    for _ in range(number):
        colour, kind = rng.choice(pairs)
        count = rng.choice(list(COUNT_WORDS))
        scenes.append(Scene(colour, kind, count, tuple(sorted(rng.sample(range(grid * grid), count)))))
    return scenes


def question_examples(scene: Scene, image: Image.Image) -> list[dict]:
    """One chat example per attribute question, plus one caption example."""
    examples = [
        {
            "messages": [
                {"role": "user", "content": IMAGE_LINE + question},
                {"role": "assistant", "content": scene.answer(attribute)},
            ],
            "images": [image],
            "attribute": attribute,
        }
        for attribute, question in QUESTIONS.items()
    ]
    examples.append(
        {
            "messages": [
                {"role": "user", "content": IMAGE_LINE + DEFAULT_CAPTION_PROMPT},
                {"role": "assistant", "content": scene.caption()},
            ],
            "images": [image],
            "attribute": "caption",
        }
    )
    return examples


def write_dataset(
    folder: str | Path, number: int, split: str, seed: int, size: int = 64, tasks: tuple[str, ...] = tuple(QUESTIONS)
) -> Path:
    """Writes PNG pictures and a JSON record list (`<split>.json`) to `folder`; returns the JSON's path.

    Each picture gets one LLaVA conversation record per attribute question in `tasks` (its `question_type` names the
    attribute) and, when `tasks` holds "caption", one caption record.
    """
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"tasks {unknown} are unknown; expected some of {', '.join(TASKS)}.")
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for index, scene in enumerate(random_scenes(number, split, seed)):
        name = f"images/{split}-{index:05d}.png"
        draw_scene(scene, size).save(folder / name)
        for attribute in tasks:
            record = {"id": f"{split}-{index}-{attribute}", "image": name}
            if attribute == "caption":
                record["text"] = scene.caption()
            else:
                question = QUESTIONS[attribute]
                record["conversations"] = [
                    {"from": "human", "value": IMAGE_LINE + question},
                    {"from": "gpt", "value": scene.answer(attribute)},
                ]
                record["question_type"] = attribute
            records.append({**record, "scene": asdict(scene)})
    path = folder / f"{split}.json"
    path.write_text(json.dumps(records, indent=1))
    return path
