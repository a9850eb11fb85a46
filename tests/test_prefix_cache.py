"""The torch backend's prefix cache: prompts that begin as earlier ones did reuse those prompts' KV caches and give the
tokens of computing everything again; pictures and embeddings are told apart by content; the byte budget holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import draw_image

from llava_qwen3.conversion import build_tiny_checkpoint
from llava_qwen3.conversion.modalities import add_modality
from llava_qwen3.inference import GenerationRequest, GenerationSettings
from llava_qwen3.inference.prefix_cache import MIN_REUSE_TOKENS, PrefixCache
from llava_qwen3.inference.torch_backend import TorchBackend

GREEDY = GenerationSettings(max_new_tokens=10)
QUESTION = "What colour is the shape in this picture, and where in the picture is it? Say it in one sentence."


def _turn(text: str, images: int = 1) -> dict:
    return {"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": text}]}


def _record(processor, messages: list[dict], images: list) -> dict:
    return {"text": processor.apply_chat_template(messages, add_generation_prompt=True), "images": images}


def _generate(backend: TorchBackend, records: list[dict]) -> list:
    generations = backend.generate([GenerationRequest(record, GREEDY) for record in records])
    assert all(generation.error is None for generation in generations)
    return generations


def test_reused_prefixes_give_the_tokens_of_computing_everything(tiny):
    _, model, processor = tiny
    plain, cached = TorchBackend(model, processor), TorchBackend(model, processor, prefix_cache_bytes=64 << 20)
    first = _record(processor, [_turn(QUESTION)], [draw_image(1)])
    first_plain, first_cached = _generate(plain, [first])[0], _generate(cached, [first])[0]
    assert first_cached.token_ids == first_plain.token_ids and first_cached.cached_tokens == 0

    conversation = [
        _turn(QUESTION),
        {"role": "assistant", "content": [{"type": "text", "text": first_plain.text}]},
        _turn("And in this one?"),
    ]
    next_turn = _record(processor, conversation, [draw_image(1), draw_image(2)])  # adds a picture
    # Alone, a request reuses all it shares with a stored prefix: the next turn at least the first turn's prompt,
    # the first turn again all of it but the last token, which generate() computes.
    alone = [_generate(cached, [record])[0] for record in (next_turn, first)]
    assert [generation.token_ids for generation in alone] == [
        _generate(plain, [record])[0].token_ids for record in (next_turn, first)
    ]
    assert (
        alone[0].cached_tokens >= first_plain.prompt_tokens and alone[1].cached_tokens == first_plain.prompt_tokens - 1
    )

    # In a batch every reusing row starts its rest at the same column, where the shortest reused prefix ends: a third
    # turn reuses the second's prompt, the first turn again only as much as leaves it the third turn's rest.
    third_turn = [
        *conversation,
        {"role": "assistant", "content": [{"type": "text", "text": alone[0].text}]},
        _turn("Which of the two is larger?", images=0),
    ]
    batch = [
        _record(processor, third_turn, [draw_image(1), draw_image(2)]),
        _record(processor, [_turn(QUESTION)], [draw_image(3)]),  # the same words about another picture
        first,
        {"text": processor.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True)},
    ]
    expected, reused = _generate(plain, batch), _generate(cached, batch)
    assert [generation.token_ids for generation in reused] == [generation.token_ids for generation in expected]
    assert [generation.prompt_tokens for generation in reused] == [generation.prompt_tokens for generation in expected]
    third, other_picture, again, text_only = reused
    assert third.cached_tokens >= alone[0].prompt_tokens
    assert 0 < again.cached_tokens == again.prompt_tokens - (third.prompt_tokens - third.cached_tokens)
    assert other_picture.cached_tokens == 0 and text_only.cached_tokens == 0  # another picture ends the shared part


def test_embeddings_are_reused_only_when_equal(tmp_path):
    model, processor = build_tiny_checkpoint(tmp_path)
    add_modality(model, processor, "m1", input_dim=8)
    plain, cached = TorchBackend(model, processor), TorchBackend(model, processor, prefix_cache_bytes=64 << 20)
    text = "<m1>\n" + QUESTION + " " + QUESTION

    def record(seed: int) -> dict:
        vectors = torch.randn(3, 8, generator=torch.Generator().manual_seed(seed))
        return {"text": text, "multimodal_data": {"multimodal_embeddings": {"m1": [vectors]}}}

    _generate(cached, [record(0)])
    expected, reused = _generate(plain, [record(0), record(1)]), _generate(cached, [record(0), record(1)])
    assert [generation.token_ids for generation in reused] == [generation.token_ids for generation in expected]
    assert reused[0].cached_tokens > 0 and reused[1].cached_tokens == 0


def _layers(length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.zeros(1, length, 2), torch.zeros(1, length, 2))]  # 16 bytes per position


def test_the_budget_drops_the_least_recently_used_and_superseded_prefixes():
    store = PrefixCache(max_bytes=16 * 80)
    first, second = np.arange(40), np.arange(100, 140)
    store.put(first, _layers(40))
    store.put(second, _layers(40))
    assert len(store) == 2 and store.nbytes == 16 * 80
    assert store.longest(first, limit=39)[1] == 39  # now the most recently used
    store.put(np.arange(200, 210), _layers(10))  # over budget: the least recently used (second) goes
    assert store.longest(second, limit=40) == (None, 0) and store.longest(first, limit=40)[1] == 40
    store.put(np.arange(60), _layers(60))  # begins with all of first: replaces it
    assert len(store) == 2 and store.longest(np.arange(60), limit=60)[1] == 60
    store.put(np.arange(100), _layers(100))  # larger than the whole budget: not kept
    assert store.nbytes <= store.max_bytes and store.longest(np.arange(100), limit=100)[1] == 60
    short = np.concatenate([np.arange(MIN_REUSE_TOKENS - 1), [-5]])  # shares too little with any prefix
    assert store.longest(short, limit=len(short)) == (None, 0)


def test_a_reused_prefix_never_ends_inside_a_placeholder_run():
    store = PrefixCache(max_bytes=1 << 20)
    picture = -12345
    key = np.concatenate([np.arange(20), np.full(30, picture), np.arange(50, 60)])  # a picture at positions 20..49
    store.put(key, _layers(len(key)))
    assert store.longest(key, limit=55)[1] == 55  # past the picture
    assert store.longest(key, limit=35)[1] == 20  # inside it: back to its start
    assert store.longest(key[:40], limit=39)[1] == 20  # a prompt that ends inside it, the same


@pytest.mark.parametrize("budget", [-1, 1.5, True])
def test_the_budget_is_checked(budget):
    with pytest.raises(ValueError, match="prefix_cache_bytes must be a whole number of bytes >= 0"):
        PrefixCache(budget)
