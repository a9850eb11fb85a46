"""vLLM's CPU engine with the plugin generates transformers' greedy tokens: images, text only, embedding modalities,
and a batch of mixed prompts."""

from __future__ import annotations

import pytest
import torch
from helpers import require
from vllm_checkpoints import (
    ENGINE_ARGS,
    ENGINE_ENV,
    MAX_NEW_TOKENS,
    build_engine_checkpoint,
    cases,
    vectors,
)

require("vllm")

import vllm  # noqa: E402

GREEDY = vllm.SamplingParams(temperature=0.0, max_tokens=MAX_NEW_TOKENS)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """(vLLM engine, transformers model, processor) on one tiny CLIP checkpoint with modalities m1 and m2."""
    folder = tmp_path_factory.mktemp("vllm-engine")
    model, processor = build_engine_checkpoint(folder)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in ENGINE_ENV.items():
            patch.setenv(name, value)
        # The engine core in this process: it starts in seconds instead of a minute of process start-up on 2 cores.
        # The server test runs vLLM's usual multi-process layout.
        patch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        yield vllm.LLM(model=str(folder), **ENGINE_ARGS), model, processor


def vllm_tokens(outputs) -> list[list[int]]:
    return [list(output.outputs[0].token_ids) for output in outputs]


@pytest.mark.parametrize("kind", ["one_image", "two_images", "text_only", "modalities"])
def test_greedy_tokens_equal_transformers(engine, kind):
    llm, model, processor = engine
    case = cases(processor)[kind]
    assert vllm_tokens(llm.generate([case.vllm_request()], GREEDY)) == [case.transformers_tokens(model, processor)]


def test_batch_of_16_mixed_prompts_equals_each_prompt_in_transformers(engine):
    llm, model, processor = engine
    batch = [case for seed in (10, 20, 30, 40) for case in cases(processor, seed).values()]
    assert len(batch) == 16
    outputs = llm.generate([case.vllm_request() for case in batch], GREEDY)
    assert vllm_tokens(outputs) == [case.transformers_tokens(model, processor) for case in batch]


def test_placeholders_are_never_generated(engine):
    # transformers suppresses them through generation_config; in vLLM the model masks them, so even a large bias
    # towards them does not bring them out.
    llm, model, processor = engine
    placeholders = [model.config.image_token_id, *(spec["token_id"] for spec in model.config.modalities.values())]
    biased = vllm.SamplingParams(temperature=0.0, max_tokens=4, logit_bias=dict.fromkeys(placeholders, 100.0))
    [tokens] = vllm_tokens(llm.generate([cases(processor)["one_image"].vllm_request()], biased))
    assert len(tokens) == 4 and not set(tokens) & set(placeholders)


def test_bad_embedding_inputs_are_refused_with_what_was_expected(engine):
    llm, _, _ = engine
    with pytest.raises(ValueError, match=r"modality 'm1' item 0 .* shape \(5,\); expected floats of shape \(12,\)"):
        llm.generate([{"prompt": "<m1> hi", "multi_modal_data": {"m1": torch.randn(5)}}], GREEDY)
    with pytest.raises(ValueError, match="holds 2 <m1> placeholders but 1 m1 items were given"):
        llm.generate([{"prompt": "<m1> <m1> hi", "multi_modal_data": {"m1": vectors(0, (12,))}}], GREEDY)
