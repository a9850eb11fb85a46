"""Answer questions about a picture with a LLaVA-Qwen3 checkpoint.

    llava-qwen3-demo [--checkpoint DIR_OR_REPO] [--image FILE] [--question TEXT] [--seed N]

Without --checkpoint it uses ./demo-checkpoint, training it first if it is not there: a tiny model trained from
scratch on the synthetic shapes (about a minute on 2 CPU cores). Without --image it draws a fresh picture of shapes
(saved as ./demo-checkpoint/demo-picture.png) and asks for their colour, shape and count, printing the true answers
beside the model's.
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from PIL import Image
from transformers import pipeline

from .commands import exit_on_error
from .record_sources import DEFAULT_CAPTION_PROMPT

DEMO_CHECKPOINT = Path("demo-checkpoint")
# The drawn picture stays in the demo's own folder, not in whatever folder the demo was started from (a checkout).
DEMO_PICTURE = DEMO_CHECKPOINT / "demo-picture.png"


def ensure_demo_checkpoint(folder: Path) -> None:
    """Trains the demo model into `folder` unless a complete checkpoint is there; an incomplete one (a save that an
    older version was interrupted in) is removed and trained again."""
    from .conversion.writing import missing_checkpoint_files

    if folder.is_dir():
        missing = missing_checkpoint_files(folder)
        if not missing:
            return
        print(f"./{folder} is incomplete (no {', '.join(missing)}): training it again")
        shutil.rmtree(folder)
    from .training.shapes_recipe import train_on_shapes

    print(f"training the demo model into ./{folder} (tiny, from scratch, on synthetic shapes)...")
    train_on_shapes(output=folder)


def main(argv: list[str] | None = None) -> None:
    """Runs the demo from the command line."""
    parser = argparse.ArgumentParser(
        prog="llava-qwen3-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", help="checkpoint folder or Hub repo id; default: ./demo-checkpoint")
    parser.add_argument("--image", type=Path, help="image file; default: a freshly drawn picture of shapes")
    parser.add_argument("--question", action="append", help="question to ask (repeatable)")
    parser.add_argument("--seed", type=int, help="seed of the drawn picture; default: a new one each run")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    args = parser.parse_args(argv)
    if args.image is not None and not args.image.is_file():
        parser.error(f"--image {args.image} is not a file")
    with exit_on_error(parser):
        _answer(args)


def _answer(args: argparse.Namespace) -> None:
    """Draws or opens the picture and prints the model's answer to each question."""
    from .training.synthetic import QUESTIONS, draw_scene, random_scenes

    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = str(DEMO_CHECKPOINT)
        ensure_demo_checkpoint(DEMO_CHECKPOINT)

    if args.image is not None:
        image, truth = Image.open(args.image).convert("RGB"), {}
        questions = args.question or [DEFAULT_CAPTION_PROMPT]
    else:
        seed = args.seed if args.seed is not None else random.randrange(10**6)
        scene = random_scenes(1, "train", seed)[0]
        image = draw_scene(scene)
        DEMO_PICTURE.parent.mkdir(exist_ok=True)
        image.save(DEMO_PICTURE)
        print(f"drew ./{DEMO_PICTURE} (seed {seed}): {scene.caption()}")
        truth = {question: scene.answer(attribute) for attribute, question in QUESTIONS.items()}
        questions = args.question or list(truth)

    answerer = pipeline("image-text-to-text", model=checkpoint, trust_remote_code=True)
    for question in questions:
        messages = [
            {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}
        ]
        # Generation settings go in generate_kwargs: the pipeline hands its other keyword arguments to the processor.
        greedy = {"max_new_tokens": args.max_new_tokens, "do_sample": False}
        result = answerer(text=messages, generate_kwargs=greedy, return_full_text=False)
        expected = f"   (true: {truth[question]})" if question in truth else ""
        print(f"Q: {question}\nA: {result[0]['generated_text']}{expected}")


if __name__ == "__main__":
    main()
