"""The torch backend's own steps over the Qwen3 language model (inference/qwen3_steps.py): the same logits and tokens
as transformers' modules and `generate()` for left-padded batches with pictures, embeddings, a prefix cache and INT8
layers, through either matrix-product library; the modules' weights read in place, not copied; transformers'
`generate()` kept where the steps do not apply; a bfloat16 or float16 KV cache at half the bytes, close to fp32's
logits."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import draw_image, user_prompt
from transformers import Qwen3Config

from llava_qwen3.inference import GenerationRequest, GenerationSettings
from llava_qwen3.inference.int8 import quantize_linear_layers_int8
from llava_qwen3.inference.qwen3_steps import Qwen3Steps, StepCache, onednn_is_faster, unsupported_reason
from llava_qwen3.inference.torch_backend import TorchBackend

ANSWER = GenerationSettings(max_new_tokens=24)


def _records(processor) -> list[dict]:
    return [
        {"text": user_prompt(processor, "What is in this picture?", 1), "images": [draw_image(1)]},
        {"text": user_prompt(processor, "Say something.", 0)},
        {
            "text": user_prompt(processor, "Describe the two pictures, please, with care.", 2),
            "images": [draw_image(2), draw_image(3)],
        },
    ]


def _follow_up(processor, first: dict) -> dict:
    """The next turn after `first` and a short answer, with `first`'s pictures."""
    text = first["text"] + "It is a picture.<|im_end|>\n" + user_prompt(processor, "And then?", 0)
    return {"text": text, "images": first["images"]}


def _prompt_logits(steps: Qwen3Steps, model, inputs) -> tuple[torch.Tensor, StepCache]:
    """The steps' next-token logits after a collated batch of prompts with pictures, and the cache they filled."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    inner = model.model
    with torch.inference_mode():
        cache = steps.new_cache(mask, ids.shape[1] + 1)
        embeds = inner.merge_image_features(
            ids, inner.get_input_embeddings()(ids), inner.project_images(inputs["pixel_values"])
        )
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return steps.forward(embeds, positions, cache), cache


def _answers(backend: TorchBackend, records: list[dict], steps: bool) -> list[list[int]]:
    kept, backend.steps = backend.steps, backend.steps if steps else None
    try:
        return [
            generation.token_ids for generation in backend.generate([GenerationRequest(r, ANSWER) for r in records])
        ]
    finally:
        backend.steps = kept


@pytest.fixture
def fresh_model(tiny_clip):
    """A copy of the tiny model, since the INT8 test quantizes it in place."""
    _, model, processor = tiny_clip
    return copy.deepcopy(model), processor


@pytest.mark.parametrize("through_onednn", [False, True], ids=["blas", "onednn"])
def test_the_steps_give_the_logits_of_the_models_forward_for_a_padded_batch(fresh_model, through_onednn):
    model, processor = fresh_model
    backend = TorchBackend(model, processor)
    assert backend.steps is not None
    backend.steps = Qwen3Steps(model.model.language_model, model.lm_head, through_onednn)
    records = _records(processor)
    inputs = processor.collate([backend.encode(record) for record in records], return_tensors="pt")
    assert not bool(inputs["attention_mask"].all()), "the batch must be left-padded"
    with torch.inference_mode():
        expected = model(**inputs, logits_to_keep=1).logits[:, -1]
    logits, cache = _prompt_logits(backend.steps, model, inputs)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    assert cache.length == inputs["input_ids"].shape[1]


@pytest.mark.parametrize("through_onednn", [False, True], ids=["blas", "onednn"])
def test_the_steps_answer_with_generates_tokens_alone_in_a_batch_and_in_int8(fresh_model, through_onednn):
    model, processor = fresh_model
    records = _records(processor)
    backend = TorchBackend(model, processor)
    backend.steps = Qwen3Steps(model.model.language_model, model.lm_head, through_onednn)
    batched = _answers(backend, records, steps=True)
    assert batched == _answers(backend, records, steps=False)
    assert max(len(tokens) for tokens in batched) == ANSWER.max_new_tokens
    assert [_answers(backend, [record], steps=True)[0] for record in records] == batched
    # Through PyTorch's BLAS a batch of 8-32 rows takes the other form of the matrix products (FEW_ROWS).
    assert _answers(backend, records * 3, steps=True) == batched * 3
    # INT8 layers are called as modules. Their activations are quantized with one scale over the whole batch, padding
    # positions included, whose values are never read and differ between implementations: compared alone.
    int8 = TorchBackend(quantize_linear_layers_int8(copy.deepcopy(model)), processor)
    for record in records:
        assert _answers(int8, [record], steps=True) == _answers(int8, [record], steps=False)


def test_the_steps_continue_from_the_prefix_cache_as_generate_does(fresh_model):
    model, processor = fresh_model
    backend = TorchBackend(model, processor, prefix_cache_bytes=64 << 20)
    first = _records(processor)[0]
    follow_up = _follow_up(processor, first)
    _answers(backend, [first], steps=True)
    reused = backend.generate([GenerationRequest(follow_up, ANSWER)])[0]
    assert reused.cached_tokens > 0
    backend.prefix_cache = None
    assert (
        reused.token_ids
        == _answers(backend, [follow_up], steps=True)[0]
        == _answers(backend, [follow_up], steps=False)[0]
    )


def test_the_steps_read_the_modules_own_weights(fresh_model):
    model, processor = fresh_model
    weights = {name: tensor.data_ptr() for name, tensor in model.state_dict().items()}
    backend = TorchBackend(model, processor)
    backend.generate([GenerationRequest(_records(processor)[0], ANSWER)])
    assert {name: tensor.data_ptr() for name, tensor in model.state_dict().items()} == weights


def test_the_steps_say_where_they_do_not_apply(tiny_clip):
    # There the backend calls the model's generate(), which the tests above compare the steps with.
    _, model, _ = tiny_clip
    text_config = model.config.text_config
    assert unsupported_reason(text_config, torch.device("cpu")) is None
    assert "cuda" in unsupported_reason(text_config, torch.device("cuda"))
    settings = {name: value for name, value in text_config.to_dict().items() if name != "layer_types"}
    sliding = Qwen3Config(**{**settings, "use_sliding_window": True, "sliding_window": 8, "max_window_layers": 0})
    assert "sliding" in unsupported_reason(sliding, torch.device("cpu"))


def test_products_go_through_onednn_on_x86_cpus_other_than_intels():
    # MKL, PyTorch's BLAS on x86, runs its fast kernels on Intel's CPUs only (docs/performance.md).
    assert onednn_is_faster("processor\t: 0\nvendor_id\t: AuthenticAMD\n", "x86_64")
    assert not onednn_is_faster("processor\t: 0\nvendor_id\t: GenuineIntel\n", "x86_64")
    assert not onednn_is_faster("processor\t: 0\nvendor_id\t: AuthenticAMD\n", "aarch64")  # not measured there
    assert not onednn_is_faster(None, "x86_64")


@pytest.mark.parametrize("kv_cache_dtype", ["bfloat16", "float16"])
def test_a_half_width_kv_cache_takes_half_the_bytes_and_keeps_the_logits_close(fresh_model, kv_cache_dtype):
    model, processor = fresh_model
    exact, narrow = TorchBackend(model, processor), TorchBackend(model, processor, kv_cache_dtype=kv_cache_dtype)
    inputs = processor.collate([exact.encode(record) for record in _records(processor)], return_tensors="pt")
    logits, caches = zip(*(_prompt_logits(backend.steps, model, inputs) for backend in (exact, narrow)), strict=True)
    assert caches[1].keys.dtype == caches[1].values.dtype == getattr(torch, kv_cache_dtype)
    assert caches[1].keys.nbytes * 2 == caches[0].keys.nbytes
    assert logits[1].dtype == torch.float32
    # bfloat16 keeps 8 significant bits of each key and value, float16 11 (measured: 0.09% and 0.01% of the largest
    # logit on this model).
    tolerance = {"bfloat16": 5e-3, "float16": 1e-3}[kv_cache_dtype]
    assert float((logits[1] - logits[0]).abs().max()) < tolerance * float(logits[0].abs().max())
    # Answers, and a follow-up that continues from the prefix cache, whose stored layers are in the cache's dtype.
    backend = TorchBackend(model, processor, prefix_cache_bytes=64 << 20, kv_cache_dtype=kv_cache_dtype)
    first = _records(processor)[0]
    assert len(_answers(backend, [first], steps=True)[0]) == ANSWER.max_new_tokens
    assert backend.generate([GenerationRequest(_follow_up(processor, first), ANSWER)])[0].cached_tokens > 0


def test_a_kv_cache_dtype_is_refused_where_it_is_unknown_or_the_steps_do_not_apply(fresh_model):
    model, processor = fresh_model
    with pytest.raises(ValueError, match="kv_cache_dtype='int4' is unknown; expected one of float32, bfloat16, "):
        TorchBackend.from_pretrained("no-such-folder", kv_cache_dtype="int4")  # before anything is read
    text_config = model.config.text_config
    text_config.layer_types = ["sliding_attention"] * text_config.num_hidden_layers
    assert TorchBackend(model, processor).steps is None  # generate() then, with its cache in the weights' dtype
    with pytest.raises(ValueError, match="kv_cache_dtype is for the torch backend's CPU steps, .*sliding-window"):
        TorchBackend(model, processor, kv_cache_dtype="bfloat16")
