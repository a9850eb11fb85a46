"""The model on tiny random checkpoints: loading, generation, batching, loss, errors, transformers features."""

from __future__ import annotations

import pytest
import torch
from helpers import draw_image, user_prompt
from transformers import DynamicCache

from llava_qwen3 import LlavaQwen3Config, LlavaQwen3ForConditionalGeneration
from llava_qwen3.conversion import tiny_config
from llava_qwen3.modeling import CACHE_ARGUMENT


def _inputs(processor, texts, images):
    return processor(images=images, text=texts, return_tensors="pt")


def test_save_load_round_trip_gives_identical_logits(tiny):
    folder, model, processor = tiny
    inputs = _inputs(processor, user_prompt(processor, "What is here?", 2), [draw_image(1), draw_image(2)])
    loaded = LlavaQwen3ForConditionalGeneration.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)


def test_greedy_with_kv_cache_equals_recomputing_the_sequence(tiny):
    _, model, processor = tiny
    inputs = _inputs(processor, user_prompt(processor, "Describe the picture.", 1), [draw_image(3)])
    settings = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False)
    cached = model.generate(**inputs, use_cache=True, **settings)
    recomputed = model.generate(**inputs, use_cache=False, **settings)
    assert cached.shape[1] == inputs["input_ids"].shape[1] + 12
    assert torch.equal(cached, recomputed)


@pytest.mark.parametrize("use_cache, expected_tower_calls", [(True, 1), (False, 6)])
def test_pixels_reach_the_tower_on_prefill_only_when_caching(tiny_clip, use_cache, expected_tower_calls):
    _, model, processor = tiny_clip
    inputs = _inputs(processor, user_prompt(processor, "Once?", 1), [draw_image(12)])
    calls = []
    hook = model.model.multi_modal_projector.register_forward_hook(lambda *args: calls.append(1))
    try:
        model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False, use_cache=use_cache)
    finally:
        hook.remove()
    assert len(calls) == expected_tower_calls


def test_a_second_turn_continued_from_the_cache_equals_recomputing_it(tiny):
    """A second turn that adds a picture, generated from the first turn's KV cache with the new picture's pixels only,
    gives the tokens of the whole conversation computed from scratch (the cache passed under the line's name)."""
    _, model, processor = tiny
    first_turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    first = _inputs(processor, processor.apply_chat_template(first_turn, add_generation_prompt=True), [draw_image(4)])
    cache = DynamicCache()
    with torch.no_grad():
        model(**first, **{CACHE_ARGUMENT: cache})  # the cache now holds the first turn's prompt
    conversation = [*first_turn, {"role": "assistant", "content": [{"type": "text", "text": "red"}]}]
    conversation.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this one?"}]})
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    whole = _inputs(processor, text, [draw_image(4), draw_image(5)])
    prompt_length = first["input_ids"].shape[1]
    assert cache.get_seq_length() == prompt_length
    assert torch.equal(whole["input_ids"][:, :prompt_length], first["input_ids"])
    settings = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)
    recomputed = model.generate(**whole, **settings)
    continued = model.generate(
        **{**whole, "pixel_values": whole["pixel_values"][1:]}, **settings, **{CACHE_ARGUMENT: cache}
    )
    assert torch.equal(continued, recomputed)


@pytest.mark.parametrize("counts", [(1, 2), (2, 0), (0, 3)])
def test_padded_batch_gives_the_same_greedy_tokens_as_each_prompt_alone(tiny, counts):
    _, model, processor = tiny
    texts = [
        user_prompt(processor, "What colour is it?", counts[0]),
        user_prompt(processor, "Count the shapes in every picture, please.", counts[1]),
    ]
    images = [[draw_image(10 + i) for i in range(counts[0])], [draw_image(20 + i) for i in range(counts[1])]]
    settings = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)

    batch = processor(images=images if any(images) else None, text=texts, return_tensors="pt")
    assert batch["attention_mask"][:, 0].min() == 0, "the shorter prompt must be left-padded"
    batch_new = model.generate(**batch, **settings)[:, batch["input_ids"].shape[1] :]
    for row, (text, row_images) in enumerate(zip(texts, images, strict=True)):
        alone = processor(images=row_images or None, text=text, return_tensors="pt")
        alone_new = model.generate(**alone, **settings)[:, alone["input_ids"].shape[1] :]
        assert torch.equal(batch_new[row], alone_new[0]), f"row {row} differs in a padded batch"


def test_labels_give_the_loss_over_unmasked_positions(tiny_clip):
    _, model, processor = tiny_clip
    inputs = _inputs(processor, user_prompt(processor, "Name the shape.", 1) + "A red circle.", [draw_image(4)])
    labels = inputs["input_ids"].clone()
    prompt_length = _inputs(processor, user_prompt(processor, "Name the shape.", 1), [draw_image(4)])[
        "input_ids"
    ].shape[1]
    labels[:, :prompt_length] = -100
    with torch.no_grad():
        output = model(**inputs, labels=labels)
    logits = output.logits[:, :-1].reshape(-1, output.logits.shape[-1])
    expected = torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(output.loss, expected, atol=1e-6)
    assert (labels != -100).sum() > 0


def test_image_count_mismatch_raises_a_clear_error(tiny_clip):
    _, model, processor = tiny_clip
    inputs = _inputs(processor, user_prompt(processor, "Two?", 1), [draw_image(5)])
    two_images = torch.cat([inputs["pixel_values"]] * 2)
    with pytest.raises(ValueError, match="1 images of 16 tokens.*but 2 images were given"):
        model(input_ids=inputs["input_ids"], pixel_values=two_images)
    with pytest.raises(ValueError, match="image placeholder tokens but no pixel_values"):
        model(input_ids=inputs["input_ids"])


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (3, 32, 32), (1, 1, 32, 32)])
def test_wrong_pixel_shape_raises_a_clear_error(tiny_clip, shape):
    _, model, processor = tiny_clip
    inputs = _inputs(processor, user_prompt(processor, "Hi", 1), [draw_image(6)])
    with pytest.raises(ValueError, match=r"pixel_values has shape .*expected \(num_images, 3, 32, 32\)"):
        model(input_ids=inputs["input_ids"], pixel_values=torch.zeros(shape))


def test_inputs_embeds_path_equals_input_ids_path(tiny_clip):
    _, model, processor = tiny_clip
    inputs = _inputs(processor, user_prompt(processor, "What is it?", 1), [draw_image(7)])
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    with torch.no_grad():
        by_ids = model(**inputs).logits
        by_embeds = model(
            inputs_embeds=embeds, pixel_values=inputs["pixel_values"], attention_mask=inputs["attention_mask"]
        ).logits
    assert torch.allclose(by_ids, by_embeds, atol=1e-6)


def test_sdpa_and_eager_attention_agree(tiny):
    folder, _, processor = tiny
    inputs = _inputs(processor, user_prompt(processor, "Compare.", 1), [draw_image(8)])
    logits = {}
    for implementation in ("sdpa", "eager"):
        model = LlavaQwen3ForConditionalGeneration.from_pretrained(folder, attn_implementation=implementation).eval()
        assert model.config.text_config._attn_implementation == implementation
        with torch.no_grad():
            logits[implementation] = model(**inputs).logits
    assert torch.allclose(logits["sdpa"], logits["eager"], atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_clip):
    folder, _, processor = tiny_clip
    inputs = _inputs(processor, user_prompt(processor, "Grad?", 1) + "Yes.", [draw_image(9)])
    gradients = []
    for checkpointing in (False, True):
        model = LlavaQwen3ForConditionalGeneration.from_pretrained(folder).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.is_gradient_checkpointing
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys()
    assert any("multi_modal_projector" in name for name in gradients[0])
    for name, grad in gradients[0].items():
        assert torch.allclose(grad, gradients[1][name], atol=1e-6), name


def test_resize_token_embeddings_keeps_existing_tokens(tiny_clip):
    folder, _, processor = tiny_clip
    model = LlavaQwen3ForConditionalGeneration.from_pretrained(folder).eval()
    old_vocab = model.config.text_config.vocab_size
    inputs = processor(text="What colour is the circle?", return_tensors="pt")
    with torch.no_grad():
        before = model(**inputs).logits
        model.resize_token_embeddings(old_vocab + 8)
        after = model(**inputs).logits
    assert model.config.text_config.vocab_size == old_vocab + 8
    assert model.get_output_embeddings().weight.shape[0] == old_vocab + 8
    assert after.shape[-1] == old_vocab + 8
    assert torch.allclose(before, after[..., :old_vocab], atol=1e-6)


@pytest.mark.parametrize("tie", [True, False])
def test_tie_word_embeddings_follows_the_config(tmp_path, tie):
    config = tiny_config(vocab_size=300, image_token_id=3, tie_word_embeddings=tie)
    assert config.tie_word_embeddings is tie
    model = LlavaQwen3ForConditionalGeneration(config)
    shares = model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert shares is tie
    model.save_pretrained(tmp_path)
    loaded = LlavaQwen3ForConditionalGeneration.from_pretrained(tmp_path)
    assert (loaded.lm_head.weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()) is tie
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_device_map_auto_places_whole_modules_and_matches(tiny_clip, tmp_path):
    folder, model, processor = tiny_clip
    # A memory cap small enough that accelerate must offload part of the model to disk.
    placed = LlavaQwen3ForConditionalGeneration.from_pretrained(
        folder, device_map="auto", max_memory={"cpu": 300_000}, offload_folder=tmp_path
    ).eval()
    assert "disk" in placed.hf_device_map.values()
    inputs = _inputs(processor, user_prompt(processor, "Where?", 1), [draw_image(11)])
    with torch.no_grad():
        assert torch.allclose(placed(**inputs).logits, model(**inputs).logits, atol=1e-6)


@pytest.mark.parametrize("projector_type", ["mlp2x_gelu", "mlp_relu_ln"])
def test_feature_layer_list_strategy_and_projector_type(projector_type):
    config = tiny_config(
        vocab_size=300,
        image_token_id=3,
        projector_type=projector_type,
        vision_feature_layer=[-3, -1],
        vision_feature_select_strategy="full",
    )
    assert config.image_seq_length == 16 + 1  # 4x4 patches plus CLIP's CLS token
    model = LlavaQwen3ForConditionalGeneration(config).eval()
    projector = model.model.multi_modal_projector
    assert projector.linear_1.in_features == 2 * config.vision_config.hidden_size
    assert isinstance(projector.norm, torch.nn.LayerNorm) is (projector_type == "mlp_relu_ln")
    features = model.model.project_images(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 17, config.text_config.hidden_size)


def test_config_validation_errors():
    with pytest.raises(ValueError, match="projector_type 'mlp9' is unknown"):
        tiny_config(vocab_size=300, image_token_id=3, projector_type="mlp9")
    with pytest.raises(ValueError, match="vision_feature_select_strategy 'cls'"):
        tiny_config(vocab_size=300, image_token_id=3, vision_feature_select_strategy="cls")
    with pytest.raises(ValueError, match="vision_feature_layer 7"):
        tiny_config(vocab_size=300, image_token_id=3, vision_feature_layer=7)
    with pytest.raises(ValueError, match="text_config has model_type 'llama'"):
        LlavaQwen3Config(text_config={"model_type": "llama"})
    with pytest.raises(ValueError, match="vision_config has model_type 'vit'"):
        LlavaQwen3Config(vision_config={"model_type": "vit"})


def test_config_accepts_a_full_dual_tower_config_and_derives_image_seq_length():
    from transformers import CLIPConfig

    clip = CLIPConfig(vision_config={"image_size": 64, "patch_size": 16, "num_hidden_layers": 2})
    config = LlavaQwen3Config(vision_config=clip.to_dict())
    assert config.vision_config.model_type == "clip_vision_model"
    assert config.image_seq_length == 16
    siglip = LlavaQwen3Config(vision_config={"model_type": "siglip_vision_model", "image_size": 64, "patch_size": 16})
    assert siglip.image_seq_length == 16  # SigLIP has no CLS token to drop
    assert siglip.to_dict()["image_seq_length"] == 16
