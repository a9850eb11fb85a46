"""The inference interface: both backends give the model's greedy text; per-request settings, stop strings,
streaming, cancellation and bad requests inside one batch."""

from __future__ import annotations

import pytest
import torch
from helpers import draw_image, user_prompt

from llava_qwen3.conversion import build_tiny_checkpoint
from llava_qwen3.conversion.modalities import add_modality
from llava_qwen3.inference import (
    GenerationRequest,
    GenerationSettings,
    LlavaQwen3Generator,
    load_backend,
)
from llava_qwen3.inference.onnx_backend import OnnxBackend
from llava_qwen3.inference.torch_backend import TorchBackend

GREEDY = GenerationSettings(max_new_tokens=8)


@pytest.fixture(scope="module")
def torch_backend(tiny_clip):
    _, model, processor = tiny_clip
    return TorchBackend(model, processor)


@pytest.fixture(scope="module")
def onnx_backend(onnx_export):
    return OnnxBackend.from_pretrained(onnx_export[0], variant="fp32")


def _records(processor) -> list[dict]:
    return [
        {"text": user_prompt(processor, "What is in this picture?", 1), "images": [draw_image(1)]},
        {
            "text": user_prompt(processor, "Describe the two pictures, please.", 2),
            "images": [draw_image(2), draw_image(3)],
        },
        {"text": user_prompt(processor, "Say something.", 0)},
    ]


def _model_greedy(model, processor, record: dict, max_new_tokens: int) -> str:
    inputs = processor(images=record.get("images") or None, text=record["text"], return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_both_backends_give_the_models_greedy_text_alone_and_in_a_batch(tiny_clip, torch_backend, onnx_backend):
    _, model, processor = tiny_clip
    records = _records(processor)
    expected = [_model_greedy(model, processor, record, GREEDY.max_new_tokens) for record in records]
    for backend in (torch_backend, onnx_backend):
        batched = backend.generate([GenerationRequest(record, GREEDY) for record in records])
        assert [generation.text for generation in batched] == expected, backend.name
        assert all(generation.error is None for generation in batched)
        for generation, record in zip(batched, records, strict=True):
            alone = processor(images=record.get("images") or None, text=record["text"])["input_ids"]
            assert generation.prompt_tokens == len(alone[0])
            assert generation.finish_reason in ("stop", "length")
            assert generation.completion_tokens == len(generation.token_ids) <= GREEDY.max_new_tokens


def test_each_request_keeps_its_own_settings_inside_a_batch(tiny_clip, torch_backend, onnx_backend):
    _, _, processor = tiny_clip
    record = _records(processor)[0]
    sampled = GenerationSettings(max_new_tokens=6, do_sample=True, temperature=1.5, top_k=40, top_p=0.9, seed=3)
    short = GenerationSettings(max_new_tokens=2)
    for backend in (torch_backend, onnx_backend):
        alone = {
            name: backend.generate([GenerationRequest(record, settings)])[0]
            for name, settings in (("greedy", GREEDY), ("sampled", sampled), ("short", short))
        }
        mixed = backend.generate(
            [GenerationRequest(record, settings) for settings in (sampled, GREEDY, short, sampled)]
        )
        assert [g.token_ids for g in mixed] == [
            alone[name].token_ids for name in ("sampled", "greedy", "short", "sampled")
        ]
        assert mixed[2].completion_tokens == 2 and mixed[2].finish_reason == "length"
        assert alone["sampled"].token_ids != alone["greedy"].token_ids[:6], "sampling at 1.5 should leave greedy"


def test_stop_strings_end_the_text_before_them_and_are_never_streamed(tiny_clip, torch_backend):
    _, _, processor = tiny_clip
    record = _records(processor)[2]
    full = torch_backend.generate([GenerationRequest(record, GenerationSettings(max_new_tokens=12))])[0].text
    assert len(full) > 6, "the tiny model's greedy text must be long enough to cut"
    stop = full[3:6]
    pieces: list[str] = []
    settings = GenerationSettings(max_new_tokens=12, stop=("never there", stop))
    generation = torch_backend.generate([GenerationRequest(record, settings, on_text=pieces.append)])[0]
    assert generation.text == full[: full.index(stop)]
    assert generation.finish_reason == "stop"
    assert "".join(pieces) == generation.text


def test_streamed_pieces_join_to_the_text_on_both_backends(tiny_clip, torch_backend, onnx_backend):
    _, _, processor = tiny_clip
    records = _records(processor)
    for backend in (torch_backend, onnx_backend):
        pieces: dict[int, list[str]] = {0: [], 1: [], 2: []}
        requests = [
            GenerationRequest(record, GREEDY, on_text=pieces[index].append) for index, record in enumerate(records)
        ]
        generations = backend.generate(requests)
        for index, generation in enumerate(generations):
            assert "".join(pieces[index]) == generation.text
            assert len(pieces[index]) > 1, "text arrives piece by piece"


def test_a_cancelled_request_stops_and_alone_stops_the_engine(tiny_clip, torch_backend):
    _, model, processor = tiny_clip
    record = _records(processor)[2]
    steps = []
    # Every forward pass of the engine embeds its new tokens once (the prompt, then one token a step).
    hook = model.get_input_embeddings().register_forward_hook(lambda *args: steps.append(1))
    try:
        pieces: list[str] = []
        request = GenerationRequest(
            record, GenerationSettings(max_new_tokens=30), on_text=pieces.append, is_cancelled=lambda: len(steps) >= 3
        )
        generation = torch_backend.generate([request])[0]
    finally:
        hook.remove()
    assert generation.finish_reason == "cancelled"
    assert generation.completion_tokens == 3 and len(steps) == 3


def test_a_bad_request_fails_alone_and_the_rest_of_its_batch_is_unchanged(tiny_clip, torch_backend, onnx_backend):
    _, _, processor = tiny_clip
    records = _records(processor)
    bad = [
        ({"text": "<image> no picture given"}, "placeholders but 0 images"),
        ({"text": "x " * 600}, "exceeds the model's context of 512 tokens"),
    ]
    for backend in (torch_backend, onnx_backend):
        expected = [g.text for g in backend.generate([GenerationRequest(r, GREEDY) for r in records])]
        for bad_record, message in bad:
            requests = [GenerationRequest(r, GREEDY) for r in (records[0], bad_record, records[1], records[2])]
            generations = backend.generate(requests)
            assert generations[1].finish_reason == "error" and message in generations[1].error, backend.name
            assert [generations[i].text for i in (0, 2, 3)] == expected
            alone = backend.generate([GenerationRequest(bad_record, GREEDY)])[0]
            assert alone.finish_reason == "error" and message in alone.error


def test_an_embedding_of_the_wrong_dimension_fails_alone(tmp_path):
    model, processor = build_tiny_checkpoint(tmp_path)
    add_modality(model, processor, "m1", input_dim=8)
    backend = TorchBackend(model, processor)
    record = {"text": "<m1>\nWhich?", "multimodal_data": {"multimodal_embeddings": {"m1": [torch.ones(8)]}}}
    wrong = {**record, "multimodal_data": {"multimodal_embeddings": {"m1": [torch.ones(3, 5)]}}}
    alone = backend.generate([GenerationRequest(record, GREEDY)])[0]
    generations = backend.generate([GenerationRequest(record, GREEDY), GenerationRequest(wrong, GREEDY)])
    assert generations[0].token_ids == alone.token_ids and alone.finish_reason != "error"
    assert generations[1].finish_reason == "error"
    assert "modality 'm1' item 0 has shape (3, 5); expected (8,) or (n, 8)" in generations[1].error


def test_onnx_backend_refuses_embedding_records(onnx_backend):
    record = {"text": "<m1> hi", "multimodal_data": {"multimodal_embeddings": {"m1": [torch.zeros(4)]}}}
    generation = onnx_backend.generate([GenerationRequest(record, GREEDY)])[0]
    assert generation.finish_reason == "error" and "embedding modalities are not exported" in generation.error


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(max_new_tokens=0), "max_new_tokens must be a positive int"),
        (dict(do_sample=True, temperature=0.0), "temperature must be a positive number"),
        (dict(do_sample=True, top_p=0.0), r"top_p must be a number in \(0, 1\]"),
        (dict(do_sample=True, top_k=-1), "top_k must be an int >= 0"),
        (dict(seed="x"), "seed must be an int"),
        (dict(stop=("",)), "stop must be non-empty strings"),
        (dict(do_sample="yes"), "do_sample must be true or false"),
    ],
)
def test_settings_are_checked_when_made(settings, message):
    with pytest.raises(ValueError, match=message):
        GenerationSettings(**settings)


def test_generator_and_load_backend_pick_the_engine(tiny_clip, onnx_export):
    folder, model, processor = tiny_clip
    record = _records(processor)[0]
    expected = _model_greedy(model, processor, record, 5)
    assert LlavaQwen3Generator.from_pretrained(folder).generate(record, max_new_tokens=5) == expected
    onnx = LlavaQwen3Generator.from_pretrained(onnx_export[0], backend="onnx", variant="fp32")
    assert onnx.generate([record], max_new_tokens=5) == [expected]
    assert load_backend(onnx_export[0], "onnx").runner.variant == "quantized"
    with pytest.raises(ValueError, match="backend 'tf' is unknown; expected one of torch, onnx"):
        load_backend(folder, "tf")
    with pytest.raises(ValueError, match="record 0: .*placeholders but 0 images"):
        LlavaQwen3Generator(TorchBackend(model, processor)).generate({"text": "<image>"})
