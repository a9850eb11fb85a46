"""Checks that a checkpoint written on one transformers line gives identical outputs on the other.

    python tests/cross_line_check.py write DIR    # on line A, with the package installed
    python tests/cross_line_check.py verify DIR   # on line B, where only the folder's remote code is used

`write` builds a CLIP and a SigLIP tiny checkpoint and stores the logits and greedy tokens it sees; `verify` loads each
folder through the Auto classes with trust_remote_code (the package is blocked from import) and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROMPT = "<|im_start|>user\n<image>\nWhat is in the picture?<|im_end|>\n<|im_start|>assistant\n"


def _image():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (48, 40), (30, 120, 200))
    ImageDraw.Draw(image).ellipse((4, 4, 30, 30), fill=(220, 40, 40))
    return image


def _outputs(model, processor):
    import torch

    inputs = processor(images=[_image()], text=PROMPT, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    generated = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    return {"input_ids": inputs["input_ids"], "logits": logits, "generated": generated}


def write(root: Path) -> None:
    import torch
    import transformers

    from llava_qwen3.conversion import build_tiny_checkpoint

    for vision in ("clip", "siglip"):
        folder = root / vision
        model, processor = build_tiny_checkpoint(folder, vision=vision, seed=1)
        torch.save(_outputs(model, processor), root / f"{vision}.pt")
    (root / "written_by").write_text(transformers.__version__)


def verify(root: Path) -> int:
    sys.modules["llava_qwen3"] = None  # only the folder's remote code may be used
    import torch
    import transformers
    from transformers import AutoModelForImageTextToText, AutoProcessor

    failed = 0
    for vision in ("clip", "siglip"):
        model = AutoModelForImageTextToText.from_pretrained(root / vision, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(root / vision, trust_remote_code=True)
        expected = torch.load(root / f"{vision}.pt")
        got = _outputs(model, processor)
        same = (
            torch.equal(got["input_ids"], expected["input_ids"])
            and torch.allclose(got["logits"], expected["logits"], atol=1e-5)
            and torch.equal(got["generated"], expected["generated"])
        )
        written_by = (root / "written_by").read_text()
        verdict = "ok" if same else "DIFFERENT"
        print(f"{vision}: written by transformers {written_by}, read by {transformers.__version__}: {verdict}")
        failed += not same
    print(f"cross-line: {2 - failed} passed, {failed} failed")
    return failed


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2])
    if command == "write":
        write(folder)
    elif command == "verify":
        sys.exit(1 if verify(folder) else 0)
    else:
        sys.exit(f"unknown command {command!r}; use write or verify")
