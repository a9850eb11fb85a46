"""The processor: placeholder expansion, image inputs of every kind, padding, chat template, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import draw_image, user_prompt

from llava_qwen3 import CHAT_TEMPLATE, LlavaQwen3Processor


def test_each_image_placeholder_expands_to_image_seq_length_tokens(tiny):
    _, model, processor = tiny
    assert processor.image_seq_length == model.config.image_seq_length
    assert processor.image_token_id == model.config.image_token_id
    inputs = processor(images=[draw_image(1), draw_image(2)], text="<image> and <image>: same?", return_tensors="pt")
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == 2 * processor.image_seq_length
    assert inputs["pixel_values"].shape == (2, 3, 32, 32)


def test_pil_numpy_tensor_and_file_path_give_the_same_pixels(tiny_clip, tmp_path):
    _, _, processor = tiny_clip
    image = draw_image(3)
    path = tmp_path / "shape.png"
    image.save(path)
    array = np.array(image)
    variants = {
        "pil": image,
        "numpy": array,
        "tensor": torch.from_numpy(array).permute(2, 0, 1),
        "path": path,
        "str": str(path),
    }
    pixels = {
        name: processor(images=[value], text="<image>", return_tensors="pt")["pixel_values"]
        for name, value in variants.items()
    }
    for name, value in pixels.items():
        assert torch.allclose(value, pixels["pil"], atol=1e-5), name


def test_batches_are_left_padded_and_nested_image_lists_follow_their_prompts(tiny_clip):
    _, _, processor = tiny_clip
    texts = ["<image> short", "a much longer prompt with <image> and <image> in it"]
    nested = processor(images=[[draw_image(1)], [draw_image(2), draw_image(3)]], text=texts, return_tensors="pt")
    flat = processor(images=[draw_image(1), draw_image(2), draw_image(3)], text=texts, return_tensors="pt")
    assert torch.equal(nested["pixel_values"], flat["pixel_values"])
    mask = nested["attention_mask"]
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and bool(mask[1].all())
    assert nested["input_ids"][0, 0] == processor.tokenizer.pad_token_id
    right = processor(
        images=[[draw_image(1)], [draw_image(2), draw_image(3)]], text=texts, padding_side="right", return_tensors="pt"
    )
    assert right["attention_mask"][0, 0] == 1 and right["attention_mask"][0, -1] == 0


def test_chat_template_renders_qwen_chatml_with_image_items(tiny_clip):
    _, _, processor = tiny_clip
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A circle."}]},
        {"role": "user", "content": [{"type": "text", "text": "Colour?"}]},
    ]
    assert processor.chat_template == CHAT_TEMPLATE
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<image>\nWhat is it?<|im_end|>\n"
        "<|im_start|>assistant\nA circle.<|im_end|>\n"
        "<|im_start|>user\nColour?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_apply_chat_template_tokenizes_with_images(tiny_clip):
    _, model, processor = tiny_clip
    messages = [
        {"role": "user", "content": [{"type": "image", "image": draw_image(4)}, {"type": "text", "text": "Hi"}]}
    ]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == processor.image_seq_length
    direct = processor(images=[draw_image(4)], text=user_prompt(processor, "Hi", 1), return_tensors="pt")
    assert torch.equal(inputs["input_ids"], direct["input_ids"])
    output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 3


def test_processor_save_load_round_trip(tiny_clip, tmp_path):
    _, _, processor = tiny_clip
    processor.save_pretrained(tmp_path)
    loaded = LlavaQwen3Processor.from_pretrained(tmp_path)
    assert loaded.image_seq_length == processor.image_seq_length and loaded.chat_template == processor.chat_template
    a = processor(images=[draw_image(5)], text="<image> hello", return_tensors="pt")
    b = loaded(images=[draw_image(5)], text="<image> hello", return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])


def test_bad_inputs_raise_clear_errors(tiny_clip, tmp_path):
    _, _, processor = tiny_clip
    with pytest.raises(ValueError, match="2 <image> placeholders but 1 images"):
        processor(images=[draw_image(1)], text="<image><image>")
    with pytest.raises(ValueError, match="Prompt 1 holds 1 <image> placeholders but 2 images"):
        processor(images=[[draw_image(1)], [draw_image(2), draw_image(3)]], text=["<image>", "<image>"])
    with pytest.raises(ValueError, match="does not exist"):
        processor(images=[tmp_path / "missing.png"], text="<image>")
    with pytest.raises(ValueError, match="truncation cut into a placeholder"):
        processor(images=[draw_image(1)], text="hello <image>", truncation=True, max_length=5)
    with pytest.raises(ValueError, match="text is required"):
        processor(images=[draw_image(1)])
    with pytest.raises(ValueError, match="image_seq_length must be a positive int"):
        LlavaQwen3Processor(processor.image_processor, processor.tokenizer, image_seq_length=0)
    text_only = LlavaQwen3Processor(processor.image_processor, processor.tokenizer)
    assert text_only(text="hello")["input_ids"]
    with pytest.raises(ValueError, match="has no image_seq_length"):
        text_only(images=[draw_image(1)], text="<image>")
    with pytest.raises(ValueError, match="has no '<img>' token"):
        LlavaQwen3Processor(processor.image_processor, processor.tokenizer, image_token="<img>", image_seq_length=4)
