"""transformers' common contract, item by item: tuples, image features, parallel plans, processor keyword routing,
assistant masks, token counts for serving code, generation from embeddings, the config alias, compilation."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from helpers import TRANSFORMERS_MAJOR, draw_image, user_prompt
from transformers import CompileConfig
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.testing_utils import CaptureLogger

from llava_qwen3 import LlavaQwen3Config, LlavaQwen3ForConditionalGeneration, LlavaQwen3Model, LlavaQwen3Processor
from llava_qwen3.conversion import tiny_config


def _inputs(processor, images=1):
    return processor(
        images=[draw_image(seed) for seed in range(images)] or None,
        text=user_prompt(processor, "What is it?", images),
        return_tensors="pt",
    )


@pytest.mark.parametrize("model_class", [LlavaQwen3Model, LlavaQwen3ForConditionalGeneration])
def test_return_dict_false_gives_a_tuple(tiny_clip, model_class):
    _, model, processor = tiny_clip
    model = model_class(model.config).eval()
    inputs = _inputs(processor)
    with torch.no_grad():
        as_tuple = model(**inputs, return_dict=False)
        as_output = model(**inputs)
    assert isinstance(as_tuple, tuple)
    assert torch.equal(as_tuple[0], as_output.to_tuple()[0])
    model.config.return_dict = False
    with torch.no_grad():
        assert isinstance(model(**inputs), tuple)
    model.config.return_dict = True


def test_get_image_features_follows_the_lines_contract(tiny):
    folder, _, processor = tiny
    model = LlavaQwen3ForConditionalGeneration.from_pretrained(folder, attn_implementation="eager").eval()
    pixel_values = _inputs(processor, images=2)["pixel_values"]
    with torch.no_grad():
        projected = model.model.project_images(pixel_values)
        features = model.get_image_features(pixel_values)
        with_states = model.get_image_features(pixel_values, output_hidden_states=True, output_attentions=True)
    assert projected.shape == (2, model.config.image_seq_length, model.config.text_config.hidden_size)
    if TRANSFORMERS_MAJOR < 5:  # 4.x's built-in Llava returns the tensor
        assert torch.equal(features, projected) and torch.allclose(with_states, projected, atol=1e-6)
        return
    assert isinstance(features, BaseModelOutputWithPooling)
    assert len(features.pooler_output) == 2 and all(
        torch.equal(a, b) for a, b in zip(features.pooler_output, projected, strict=True)
    )
    assert features.hidden_states is None and features.attentions is None
    num_layers = model.config.vision_config.num_hidden_layers
    assert len(with_states.hidden_states) == num_layers + 1 and len(with_states.attentions) == num_layers
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(with_states.pooler_output, projected, strict=True))
    assert with_states.last_hidden_state.shape[-1] == model.config.vision_config.hidden_size
    as_tuple = model.get_image_features(pixel_values, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], features.last_hidden_state)


def test_the_tower_runs_only_to_the_deepest_selected_layer(tiny):
    _, model, processor = tiny
    pixel_values = _inputs(processor)["pixel_values"]
    layers = getattr(model.model.vision_tower, "vision_model", model.model.vision_tower).encoder.layers
    calls = []
    hooks = [
        layer.register_forward_hook(lambda *args, index=index: calls.append(index))
        for index, layer in enumerate(layers)
    ]
    try:
        with torch.no_grad():
            fast = model.model.project_images(pixel_values)
        deepest_selected = model.config.vision_feature_layer % (len(layers) + 1)  # -2 of 2 layers: hidden state 1
        assert calls == list(range(deepest_selected))
        full = model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states
        expected = model.model._project([full[deepest_selected]], model.config.vision_feature_select_strategy)
    finally:
        for hook in hooks:
            hook.remove()
    assert torch.allclose(fast, expected, atol=1e-6)


def test_tensor_parallel_plan_names_the_head_and_the_language_model(tiny_clip):
    _, model, _ = tiny_clip
    expected_head = "colwise_gather_output" if TRANSFORMERS_MAJOR >= 5 else "colwise_rep"
    assert type(model)._tp_plan == {"lm_head": expected_head}
    assert type(model)._pp_plan == {"lm_head": (["hidden_states"], ["logits"])}
    plan = model.tp_plan
    assert plan["model.language_model.layers.*.self_attn.q_proj"] == "colwise"
    assert plan["model.language_model.layers.*.mlp.down_proj"] == "rowwise"
    if TRANSFORMERS_MAJOR >= 5:  # 4.x keeps the head's entry on the class only, as its own Qwen3ForCausalLM does
        assert plan["lm_head"] == expected_head


TP_SCRIPT = """
import os, sys, json, torch
from llava_qwen3 import LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor
from PIL import Image
folder = sys.argv[1]
model = LlavaQwen3ForConditionalGeneration.from_pretrained(folder, tp_plan="auto").eval()
processor = LlavaQwen3Processor.from_pretrained(folder)
inputs = processor(images=[Image.open(sys.argv[2])], text="<image> What is it?", return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits
    tokens = model.generate(**inputs, max_new_tokens=6, do_sample=False)[0].tolist()
weight = model.model.language_model.layers[0].self_attn.q_proj.weight
report = {"rank": int(os.environ["RANK"]), "local_rows": weight.to_local().shape[0],
          "logits": logits[0, -1, :8].tolist(), "tokens": tokens}
with open(os.path.join(sys.argv[3], f"rank{report['rank']}.json"), "w") as file:
    json.dump(report, file)
# An orderly end: left to interpreter exit, gloo's threads can abort a rank ("terminate called without an active
# exception", seen in CI).
torch.distributed.barrier()
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_tp_plan_auto_under_torchrun_with_two_cpu_processes(tiny_clip, tmp_path):
    folder, model, processor = tiny_clip
    script, image = tmp_path / "tp.py", tmp_path / "picture.png"
    script.write_text(textwrap.dedent(TP_SCRIPT))
    draw_image(5).save(image)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run(
        [*torchrun, str(script), str(folder), str(image), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(report["rank"] for report in reports) == [0, 1]
    inputs = processor(images=[draw_image(5)], text="<image> What is it?", return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1, :8]
        tokens = model.generate(**inputs, max_new_tokens=6, do_sample=False)[0].tolist()
    for report in reports:
        assert report["local_rows"] == model.config.text_config.num_attention_heads * model.config.text_head_dim // 2
        assert torch.allclose(torch.tensor(report["logits"]), logits, atol=1e-5)
        assert report["tokens"] == tokens


def test_processor_routes_keyword_arguments_like_builtin_processors(tiny_clip, tmp_path):
    _, _, processor = tiny_clip
    image = draw_image(1)
    normalised = processor(images=image, text="<image> x", return_tensors="pt")["pixel_values"]
    flat = processor(images=image, text="<image> x", do_normalize=False, return_tensors="pt")["pixel_values"]
    nested = processor(images=image, text="<image> x", images_kwargs={"do_normalize": False}, return_tensors="pt")
    assert normalised.min() < 0 <= flat.min() and flat.max() <= 1
    assert torch.equal(flat, nested["pixel_values"])
    padded = processor(
        text="hi there", text_kwargs={"padding": "max_length", "max_length": 30}, common_kwargs={"return_tensors": "pt"}
    )
    assert isinstance(padded["input_ids"], torch.Tensor) and padded["input_ids"].shape == (1, 30)
    with pytest.raises(ValueError, match="padding was passed two times"):
        processor(text="hi", padding="max_length", text_kwargs={"padding": "longest"})
    logger = CaptureLogger(transformers.processing_utils.logger)
    with logger:
        processor(text="hi", frobnicate=3)
    assert "`frobnicate` is not a valid argument" in logger.out
    # The tokenizer's saved defaults apply unless a call says otherwise.
    processor.tokenizer.padding_side = "right"
    try:
        processor.save_pretrained(tmp_path)
    finally:
        processor.tokenizer.padding_side = "left"
    loaded = LlavaQwen3Processor.from_pretrained(tmp_path)
    batch = loaded(text=["a", "a much longer prompt"], return_tensors="pt")
    assert batch["attention_mask"][0, 0] == 1 and batch["attention_mask"][0, -1] == 0
    left = loaded(text=["a", "a much longer prompt"], padding_side="left", return_tensors="pt")
    assert left["attention_mask"][0, 0] == 0


def test_assistant_tokens_mask_covers_the_replies_after_expanded_images(tiny_clip):
    _, _, processor = tiny_clip
    messages = [
        {"role": "user", "content": [{"type": "image", "image": draw_image(2)}, {"type": "text", "text": "What?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]},
        {"role": "user", "content": [{"type": "text", "text": "More?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "No."}]},
    ]
    out = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    mask = torch.as_tensor(out["assistant_masks"][0]).bool()
    assert processor.decode(out["input_ids"][0][mask]) == "A red square.<|im_end|>No.<|im_end|>"
    assert "offset_mapping" not in out
    # Offsets are given in the text as written: an expanded <image> maps to its own span.
    inputs = processor(text="ab <image> cd", images=draw_image(3), return_offsets_mapping=True)
    offsets = [tuple(offset) for offset in inputs["offset_mapping"][0]]
    image = [
        offset
        for offset, token in zip(offsets, inputs["input_ids"][0], strict=True)
        if token == processor.image_token_id
    ]
    assert image == [(3, 10)] * processor.image_seq_length and offsets[-1][1] == len("ab <image> cd")


def test_num_multimodal_tokens_for_serving_code(tiny_clip):
    _, model, processor = tiny_clip
    data = processor._get_num_multimodal_tokens(image_sizes=[[10, 20], [640, 480]])
    assert data.num_image_tokens == [model.config.image_seq_length] * 2
    assert data.num_image_patches == [1, 1]
    assert "num_image_tokens" in processor._get_num_multimodal_tokens(image_sizes=[[8, 8]])


def test_generate_from_inputs_embeds_with_pixels(tiny_clip):
    _, model, processor = tiny_clip
    inputs = _inputs(processor)
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    settings = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    from_ids = model.generate(**inputs, **settings)[:, inputs["input_ids"].shape[1] :]
    from_embeds = model.generate(
        inputs_embeds=embeds, attention_mask=inputs["attention_mask"], pixel_values=inputs["pixel_values"], **settings
    )
    assert torch.equal(from_embeds, from_ids)


def test_image_token_index_is_an_alias_that_stays_in_sync(tmp_path):
    config = tiny_config(vocab_size=300, image_token_id=3)
    assert config.image_token_index == 3
    config.image_token_index = 7
    assert config.image_token_id == 7
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["image_token_id"] == 7 and "image_token_index" not in saved
    assert LlavaQwen3Config.from_pretrained(tmp_path).image_token_index == 7
    assert LlavaQwen3Config(**{**saved, "image_token_id": None, "image_token_index": 9}).image_token_id == 9


@pytest.mark.slow
def test_compiled_static_cache_greedy_equals_eager(tiny_clip):
    _, model, processor = tiny_clip
    assert model._can_compile_fullgraph
    inputs = _inputs(processor)
    settings = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)
    eager = model.generate(**inputs, **settings)
    compile_config = CompileConfig(fullgraph=True, mode="default")
    compile_config._compile_all_devices = True  # generate() compiles on accelerators only unless told
    torch._dynamo.reset()
    compiled = model.generate(**inputs, cache_implementation="static", compile_config=compile_config, **settings)
    assert hasattr(model, "_compiled_call"), "generate() did not compile the decoding step"
    assert torch.equal(compiled, eager)
