"""Importing transformers' LlavaForConditionalGeneration checkpoints (Qwen3 text model) gives equal logits."""

from __future__ import annotations

import pytest
import torch
from helpers import draw_image, save_tiny_llava
from transformers import LlavaForConditionalGeneration

from llava_qwen3 import LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor
from llava_qwen3.conversion.import_llava import import_llava_checkpoint, main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("vision, strategy", [("clip", "default"), ("clip", "full"), ("siglip", "full")])
def test_import_gives_equal_logits(tmp_path, vision, strategy):
    llava_processor = save_tiny_llava(tmp_path / "llava", vision, strategy)
    output = import_llava_checkpoint(str(tmp_path / "llava"), tmp_path / "imported")

    llava = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava").eval()
    model = LlavaQwen3ForConditionalGeneration.from_pretrained(output).eval()
    processor = LlavaQwen3Processor.from_pretrained(output)
    assert processor.chat_template == llava_processor.chat_template
    texts = ["<image> what is it?", "two pictures: <image> <image>"]
    images = [[draw_image(1)], [draw_image(2), draw_image(3)]]
    ours = processor(images=images, text=texts, return_tensors="pt")
    theirs = llava_processor(
        images=[image for row in images for image in row], text=texts, padding=True, return_tensors="pt"
    )
    assert torch.equal(ours["pixel_values"], theirs["pixel_values"])
    with torch.no_grad():
        ours_logits = model(**ours).logits
        theirs_logits = llava(**theirs).logits
    # Padding sides may differ between the processors: compare the rows' real tokens.
    for row in range(2):
        ours_row = ours_logits[row][ours["attention_mask"][row].bool()]
        theirs_row = theirs_logits[row][theirs["attention_mask"][row].bool()]
        assert torch.allclose(ours_row, theirs_row, atol=1e-5)


@pytest.mark.parametrize(
    "vision, strategy, act, text_model_type, message",
    [
        ("siglip", "default", "gelu", "qwen3", "drops the first SigLIP patch token"),
        ("clip", "default", "relu", "qwen3", "projector uses 'relu'"),
        ("clip", "default", "gelu", "llama", "language model is 'llama'; expected 'qwen3'"),
    ],
)
def test_import_refuses_what_it_cannot_reproduce(tmp_path, capsys, vision, strategy, act, text_model_type, message):
    save_tiny_llava(tmp_path / "llava", vision, strategy, act=act, text_model_type=text_model_type)
    with pytest.raises(SystemExit) as stop:
        main(["--source", str(tmp_path / "llava"), "--output", str(tmp_path / "out")])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
