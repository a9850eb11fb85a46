"""Worked example: pass CLIP image embeddings (one vector per image) to LLaVA-Qwen3 as modality m1.

    python examples/clip_embeddings_as_m1.py --clip openai/clip-vit-base-patch32 --checkpoint my-llava-qwen3 \
        --image photo.jpg [--output with-m1]

The embedding comes from `CLIPVisionModelWithProjection` (the vector CLIP uses for retrieval). If the checkpoint has
no m1 yet, one is added with a fresh projector (untrained: train it before trusting its answers) and, with --output,
saved.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoProcessor, CLIPVisionModelWithProjection

from llava_qwen3 import LlavaQwen3Generator
from llava_qwen3.conversion.modalities import add_modality


def clip_image_embedding(clip: str, image: Image.Image) -> torch.Tensor:
    """CLIP's projected image embedding: one vector of `projection_dim` values."""
    model = CLIPVisionModelWithProjection.from_pretrained(clip).eval()
    pixels = AutoProcessor.from_pretrained(clip)(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return model(pixel_values=pixels).image_embeds[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--image", required=True, type=Path)
    parser.add_argument("--question", default="What is in this picture?")
    parser.add_argument("--output", type=Path, help="where to save the checkpoint with m1 added")
    args = parser.parse_args()

    embedding = clip_image_embedding(args.clip, Image.open(args.image).convert("RGB"))
    generator = LlavaQwen3Generator.from_pretrained(args.checkpoint)
    model, processor = generator.backend.model, generator.backend.processor  # the PyTorch backend's
    if "m1" not in model.config.modalities:
        add_modality(model, processor, "m1", input_dim=embedding.shape[-1])
        if args.output:
            model.save_pretrained(args.output)
            processor.save_pretrained(args.output)
    record = {"text": f"<m1>\n{args.question}", "multimodal_data": {"multimodal_embeddings": {"m1": [embedding]}}}
    print(f"m1: CLIP embedding of {args.image.name}, {embedding.shape[-1]} values")
    print(f"A: {generator.generate(record, max_new_tokens=20)}")


if __name__ == "__main__":
    main()
