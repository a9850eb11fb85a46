"""The vLLM plugin without an engine: registration through the entry point, placeholder expansion by vLLM's
processor, and weight loading from real saved checkpoints in both tower-name layouts."""

from __future__ import annotations

import json
import tempfile
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch
from helpers import require
from vllm_checkpoints import (
    ENGINE_ARGS,
    build_engine_checkpoint,
    cases,
    copy_with_vision_model_level,
    vectors,
)

require("vllm")

from transformers import AutoConfig  # noqa: E402
from vllm import ModelRegistry  # noqa: E402
from vllm.config import set_current_vllm_config  # noqa: E402
from vllm.distributed import (  # noqa: E402
    cleanup_dist_env_and_memory,
    ensure_model_parallel_initialized,
    init_distributed_environment,
)
from vllm.engine.arg_utils import EngineArgs  # noqa: E402
from vllm.model_executor.model_loader import get_model_loader  # noqa: E402
from vllm.model_executor.model_loader.utils import process_weights_after_loading  # noqa: E402
from vllm.multimodal import MULTIMODAL_REGISTRY  # noqa: E402
from vllm.utils.torch_utils import set_default_torch_dtype  # noqa: E402

from llava_qwen3 import LlavaQwen3Config  # noqa: E402
from llava_qwen3.vllm import ARCHITECTURE, MODEL_CLASS, register  # noqa: E402
from llava_qwen3.vllm.model import LlavaQwen3ForConditionalGeneration  # noqa: E402


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny checkpoints by name: (folder, transformers model, processor).

    "clip": CLIP tower, modalities m1 and m2, separate output head, transformers 5 names;
    "clip_vision_model_level": the same weights under the `vision_model.` names of transformers 4.x;
    "siglip_tied": SigLIP tower, output head tied to the input embeddings, no modalities.
    """
    root = tmp_path_factory.mktemp("vllm-plugin")
    clip = build_engine_checkpoint(root / "clip")
    siglip = build_engine_checkpoint(root / "siglip", vision="siglip", with_modalities=False, tie_word_embeddings=True)
    legacy = copy_with_vision_model_level(root / "clip", root / "clip_vision_model_level")
    return {
        "clip": (root / "clip", *clip),
        "clip_vision_model_level": (legacy, *clip),
        "siglip_tied": (root / "siglip", *siglip),
    }


def engine_config(folder):
    return EngineArgs(model=str(folder), **ENGINE_ARGS).create_engine_config()


def test_entry_point_registers_config_and_architecture(checkpoints, monkeypatch):
    # As in a process where vLLM has not loaded its plugins yet (this one may have, for an earlier test).
    monkeypatch.delitem(ModelRegistry.models, ARCHITECTURE, raising=False)
    assert ARCHITECTURE not in ModelRegistry.get_supported_archs()
    [entry] = [entry for entry in entry_points(group="vllm.general_plugins") if entry.name == "llava_qwen3"]
    assert entry.load() is register
    entry.load()()
    register()  # vLLM calls it in every process, possibly more than once
    assert ARCHITECTURE in ModelRegistry.get_supported_archs()
    assert isinstance(AutoConfig.for_model("llava_qwen3"), LlavaQwen3Config)
    folder, _, _ = checkpoints["clip"]
    saved = json.loads((folder / "config.json").read_text())
    assert saved["architectures"] == [ARCHITECTURE]
    model_class = LlavaQwen3ForConditionalGeneration
    assert MODEL_CLASS == f"{model_class.__module__}:{model_class.__name__}"


def test_placeholders_expand_to_each_items_tokens(checkpoints):
    folder, _, hf_processor = checkpoints["clip"]
    config = engine_config(folder)
    processor = MULTIMODAL_REGISTRY.create_processor(config.model_config)
    case = cases(hf_processor)["modalities"]  # <m1> <image> <m2> <m1>: items of 1, 16, 3 and 4 tokens
    prompt_ids = hf_processor.tokenizer(case.text)["input_ids"]
    items = processor.info.parse_mm_data(case.vllm_request()["multi_modal_data"])
    result = processor(prompt_ids, items)

    reference = hf_processor(text=case.text, images=case.images, modality_embeds=case.embeddings, return_tensors="pt")
    assert result["prompt_token_ids"] == reference["input_ids"][0].tolist()
    lengths = {modality: [r.length for r in ranges] for modality, ranges in result["mm_placeholders"].items()}
    assert lengths == {"image": [config.model_config.hf_config.image_seq_length], "m1": [1, 4], "m2": [3]}
    hf_config = config.model_config.hf_config
    token_ids = {"image": hf_config.image_token_id} | {k: v["token_id"] for k, v in hf_config.modalities.items()}
    for modality, ranges in result["mm_placeholders"].items():
        for placeholder in ranges:
            token_id = token_ids[modality]
            span = result["prompt_token_ids"][placeholder.offset : placeholder.offset + placeholder.length]
            assert span == [token_id] * placeholder.length
    [image_item] = result["mm_kwargs"]["image"]
    assert torch.equal(image_item["pixel_values"].data, reference["pixel_values"][0])


def test_placeholder_and_item_counts_must_agree(checkpoints):
    folder, _, hf_processor = checkpoints["clip"]
    processor = MULTIMODAL_REGISTRY.create_processor(engine_config(folder).model_config)
    prompt_ids = hf_processor.tokenizer("<m1> and <m1> but one item")["input_ids"]
    items = processor.info.parse_mm_data({"m1": vectors(0, (12,))})
    with pytest.raises(ValueError, match="holds 2 <m1> placeholders but 1 m1 items were given"):
        processor(prompt_ids, items)
    with pytest.raises(ValueError, match=r"modality 'm2' item 1 .* shape \(2, 5\); expected floats of shape \(7,\)"):
        processor.info.parse_mm_data({"m2": vectors(0, (7,), (2, 5))})
    with pytest.raises(ValueError, match="takes images as pictures .* not precomputed image embeddings"):
        processor.info.parse_mm_data({"image": torch.zeros(1, 16, 64)})


def test_modality_items_come_as_vectors_sequences_batches_arrays_or_files(checkpoints, tmp_path):
    folder, _, hf_processor = checkpoints["clip"]
    processor = MULTIMODAL_REGISTRY.create_processor(engine_config(folder).model_config)
    vector, sequence = vectors(0, (12,), (3, 12))
    np.save(tmp_path / "sequence.npy", sequence.numpy())
    forms = {
        "one vector": (vector, [1]),
        "one sequence": (sequence, [3]),
        "a list": ([vector, sequence.numpy(), tmp_path / "sequence.npy"], [1, 3, 3]),
        "a (k, n, dim) batch": (torch.stack([sequence, sequence]), [3, 3]),
    }
    for form, (data, lengths) in forms.items():
        items = processor.info.parse_mm_data({"m1": data})["m1"]
        parsed = [items.get(index) for index in range(len(items))]
        # The positions each takes, as the processor (the one owner of that count) says
        assert hf_processor.placeholder_lengths(0, {"m1": parsed})["<m1>"] == lengths, form
        assert all(items.get(index).dtype == torch.float32 for index in range(len(items))), form
    assert torch.equal(processor.info.parse_mm_data({"m1": tmp_path / "sequence.npy"})["m1"].get(0), sequence)


@pytest.fixture(scope="module")
def distributed(checkpoints):
    """vLLM's process group for one CPU process, which building its layers needs."""
    folder, _, _ = checkpoints["clip"]
    with set_current_vllm_config(engine_config(folder)):
        init_distributed_environment(
            world_size=1, rank=0, local_rank=0, distributed_init_method=f"file://{tempfile.mktemp()}", backend="gloo"
        )
        ensure_model_parallel_initialized(1, 1)
    yield
    cleanup_dist_env_and_memory()


@pytest.mark.parametrize("name", ["clip", "clip_vision_model_level", "siglip_tied"])
def test_weights_load_from_saved_checkpoints(checkpoints, distributed, name):
    folder, hf_model, hf_processor = checkpoints[name]
    config = engine_config(folder)
    loader = get_model_loader(config.load_config)
    with set_current_vllm_config(config), set_default_torch_dtype(torch.float32):
        model = loader.create_model(vllm_config=config, model_config=config.model_config)
        # Strict: raises for any checkpoint weight without a parameter and any parameter left unloaded.
        loader.load_weights(model, config.model_config)
        process_weights_after_loading(model, config.model_config, torch.device("cpu"))  # CPU kernels' layouts

    case = cases(hf_processor)["one_image"]
    pixel_values = hf_processor(text=case.text, images=case.images, return_tensors="pt")["pixel_values"]
    embeddings = {"m1": vectors(1, (3, 12)), "m2": vectors(2, (2, 7), (1, 7))}
    with torch.no_grad():
        per_image = hf_model.get_image_features(pixel_values).pooler_output  # transformers 5: one tensor per image
        torch.testing.assert_close(model.image_features(pixel_values), torch.stack(per_image))
        for modality in hf_model.config.modalities:
            ours = torch.cat(model.modality_features(modality, embeddings[modality]))
            torch.testing.assert_close(ours, hf_model.model.get_modality_features(modality, embeddings[modality]))
    vocab_size = hf_model.config.text_config.vocab_size  # vLLM pads its vocabulary rows to a multiple of 64
    language_model = model.language_model
    assert torch.equal(language_model.model.embed_tokens.weight[:vocab_size], hf_model.get_input_embeddings().weight)
    assert torch.equal(language_model.lm_head.weight[:vocab_size], hf_model.lm_head.weight)
