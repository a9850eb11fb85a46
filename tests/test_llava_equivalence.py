"""Same weights, same logits as transformers' built-in LlavaForConditionalGeneration with a Qwen3 text config."""

from __future__ import annotations

import pytest
import torch
from helpers import draw_image, user_prompt
from transformers import LlavaConfig, LlavaForConditionalGeneration

from llava_qwen3 import LlavaQwen3ForConditionalGeneration


def _as_llava(model: LlavaQwen3ForConditionalGeneration) -> LlavaForConditionalGeneration:
    config = model.config
    # Llava's "default" strategy always drops the first token; for a tower without CLS the same choice is "full".
    strategy = config.vision_feature_select_strategy if config.vision_has_cls_token else "full"
    llava_config = LlavaConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=config.text_config.to_dict(),
        image_token_index=config.image_token_id,
        image_seq_length=config.image_seq_length,
        projector_hidden_act="gelu",
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=strategy,
        multimodal_projector_bias=config.multimodal_projector_bias,
        tie_word_embeddings=config.tie_word_embeddings,
    )
    llava = LlavaForConditionalGeneration(llava_config).eval()
    llava.load_state_dict(model.state_dict(), strict=True)
    return llava


def _compare(model, processor):
    llava = _as_llava(model)
    texts = [user_prompt(processor, "What is shown?", 2), user_prompt(processor, "And here, in one word?", 1)]
    inputs = processor(images=[[draw_image(1), draw_image(2)], [draw_image(3)]], text=texts, return_tensors="pt")
    with torch.no_grad():
        ours = model(**inputs).logits
        theirs = llava(**inputs).logits
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_logits_equal_builtin_llava(tiny):
    _, model, processor = tiny
    _compare(model, processor)


@pytest.mark.parametrize("layers", [-1, [-3, -2]])
def test_logits_equal_builtin_llava_for_other_feature_layers(tiny, layers):
    _, model, processor = tiny
    config = model.config.__class__(**{**model.config.to_dict(), "vision_feature_layer": layers})
    torch.manual_seed(0)
    variant = LlavaQwen3ForConditionalGeneration(config).eval()
    _compare(variant, processor)
