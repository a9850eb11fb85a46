"""Answer a question about an image with a LLaVA-Qwen3 checkpoint.

    llava-qwen3-demo [--checkpoint DIR_OR_REPO] [--image FILE] [--question TEXT]

Without --checkpoint it builds a tiny checkpoint with random weights in ./demo-checkpoint (its answers are noise
until a trained checkpoint exists); without --image it draws one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw
from transformers import pipeline


def draw_demo_image() -> Image.Image:
    """A red circle and a blue square on white, drawn with Pillow."""
    image = Image.new("RGB", (224, 224), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 60, 100, 140), fill="red")
    draw.rectangle((130, 60, 200, 130), fill="blue")
    return image


def main(argv: list[str] | None = None) -> None:
    """Runs the demo from the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint folder or Hub repo id; default: build a tiny one")
    parser.add_argument("--image", type=Path, help="image file; default: a drawn picture of shapes")
    parser.add_argument("--question", default="What shapes are in the picture?")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    args = parser.parse_args(argv)

    checkpoint = args.checkpoint
    if checkpoint is None:
        from .conversion import build_tiny_checkpoint

        checkpoint = "demo-checkpoint"
        build_tiny_checkpoint(checkpoint)
        print(f"built a tiny random checkpoint in ./{checkpoint} (untrained: expect a meaningless answer)")
    if args.image is not None and not args.image.is_file():
        parser.error(f"--image {args.image} is not a file")
    image = Image.open(args.image).convert("RGB") if args.image else draw_demo_image()

    answerer = pipeline("image-text-to-text", model=checkpoint, trust_remote_code=True)
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": args.question}]}
    ]
    result = answerer(text=messages, max_new_tokens=args.max_new_tokens, do_sample=False, return_full_text=False)
    print(f"Q: {args.question}")
    print(f"A: {result[0]['generated_text']}")


if __name__ == "__main__":
    main()
