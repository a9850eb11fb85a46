"""Precomputed-embedding modalities: placement, batching, cache, save/load after add_modality, records, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import draw_image, run_fresh_python
from safetensors.torch import save_file

from llava_qwen3 import LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor
from llava_qwen3.conversion.modalities import add_modality
from llava_qwen3.inference import LlavaQwen3Generator
from llava_qwen3.inference.torch_backend import TorchBackend

GREEDY = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)


@pytest.fixture(scope="module")
def with_modalities(tiny_clip, tmp_path_factory):
    """The tiny CLIP checkpoint with modalities m1 (12-dim) and m2 (7-dim, mlp_relu_ln), saved and reloaded."""
    folder, _, _ = tiny_clip
    model = LlavaQwen3ForConditionalGeneration.from_pretrained(folder).eval()
    processor = LlavaQwen3Processor.from_pretrained(folder)
    torch.manual_seed(3)
    add_modality(model, processor, "m1", input_dim=12)
    add_modality(model, processor, "m2", input_dim=7, projector_type="mlp_relu_ln")
    saved = tmp_path_factory.mktemp("with-modalities")
    model.save_pretrained(saved)
    processor.save_pretrained(saved)
    return saved, model, processor


def _vectors(seed: int, *shapes):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator) for shape in shapes]


def test_add_modality_round_trips_through_save_and_remote_code(with_modalities, tmp_path):
    folder, model, processor = with_modalities
    assert model.config.modalities["m1"]["token"] == "<m1>" and model.config.modalities["m2"]["input_dim"] == 7
    loaded = LlavaQwen3ForConditionalGeneration.from_pretrained(folder).eval()
    loaded_processor = LlavaQwen3Processor.from_pretrained(folder)
    assert loaded_processor.modality_tokens == {"m1": "<m1>", "m2": "<m2>"}
    inputs = processor(
        text="<m1> and <m2> and <image>",
        images=[draw_image(1)],
        modality_embeds={"m1": _vectors(0, (12,)), "m2": _vectors(1, (3, 7))},
        return_tensors="pt",
    )
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)
    torch.save({"inputs": dict(inputs), "logits": model(**inputs).logits.detach()}, tmp_path / "reference.pt")
    run_fresh_python(
        f"""
        import torch
        from transformers import AutoModelForImageTextToText
        model = AutoModelForImageTextToText.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        reference = torch.load("reference.pt")
        with torch.no_grad():
            assert torch.allclose(model(**reference["inputs"]).logits, reference["logits"], atol=1e-6)
        """,
        cwd=tmp_path,
    )


def test_each_item_replaces_its_placeholders_in_order(with_modalities):
    _, model, processor = with_modalities
    one, sequence = _vectors(2, (12,), (3, 12))
    inputs = processor(text="a <m1> b <m1> c", modality_embeds={"m1": [one, sequence]}, return_tensors="pt")
    token_id = model.config.modalities["m1"]["token_id"]
    positions = (inputs["input_ids"][0] == token_id).nonzero().flatten()
    assert len(positions) == 4  # one vector, then three
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    merged = model.model.merge_modality_features(inputs["input_ids"], embeds, inputs["modality_embeds"])
    expected = model.model.get_modality_features("m1", [one, sequence])
    assert torch.allclose(merged[0, positions], expected, atol=1e-6)


@pytest.mark.parametrize("with_image", [False, True])
def test_batched_equals_alone_and_cache_equals_recompute(with_modalities, with_image):
    _, model, processor = with_modalities
    images = [[draw_image(5)] if with_image else [], []]
    texts = [("<image> " if with_image else "") + "<m1> What colour?", "<m2> <m1> <m1> Describe these, please."]
    embeds = {"m1": [_vectors(6, (12,)), _vectors(7, (2, 12), (12,))], "m2": [[], _vectors(8, (4, 7))]}
    batch = processor(
        images=images if with_image else None,
        text=texts,
        modality_embeds={"m1": [row for row in embeds["m1"]], "m2": embeds["m2"]},
        return_tensors="pt",
    )
    batch_new = model.generate(**batch, **GREEDY)[:, batch["input_ids"].shape[1] :]
    for row in range(2):
        alone = processor(
            images=images[row] or None,
            text=texts[row],
            modality_embeds={name: items[row] for name, items in embeds.items() if items[row]},
            return_tensors="pt",
        )
        cached = model.generate(**alone, use_cache=True, **GREEDY)
        recomputed = model.generate(**alone, use_cache=False, **GREEDY)
        assert torch.equal(cached, recomputed)
        assert torch.equal(batch_new[row], cached[0, alone["input_ids"].shape[1] :]), f"row {row}"


def test_records_and_the_generator(with_modalities, tmp_path):
    folder, model, processor = with_modalities
    vector, sequence = _vectors(9, (12,), (2, 7))
    np.save(tmp_path / "vector.npy", vector.numpy())
    save_file({"embedding": sequence}, tmp_path / "sequence.safetensors")
    records = [
        {
            "text": "<m1> <m2> Name it.",
            "multimodal_data": {
                "multimodal_embeddings": {
                    "m1": [str(tmp_path / "vector.npy")],
                    "m2": [tmp_path / "sequence.safetensors"],
                }
            },
        },
        {"text": "<image> Only a picture.", "images": [draw_image(10)]},
    ]
    generator = LlavaQwen3Generator.from_pretrained(folder)
    batched = generator.generate(records, max_new_tokens=5)
    alone = [generator.generate(record, max_new_tokens=5) for record in records]
    assert batched == alone and all(isinstance(text, str) for text in alone)
    direct = processor(
        text="<m1> <m2> Name it.", modality_embeds={"m1": [vector], "m2": [sequence]}, return_tensors="pt"
    )
    tokens = model.generate(**direct, max_new_tokens=5, do_sample=False)[0, direct["input_ids"].shape[1] :]
    assert alone[0] == processor.decode(tokens, skip_special_tokens=True)


def test_chat_template_renders_embedding_items(with_modalities):
    _, _, processor = with_modalities
    messages = [{"role": "user", "content": [{"type": "embedding", "modality": "m1"}, {"type": "text", "text": "Hi"}]}]
    assert processor.apply_chat_template(messages) == "<|im_start|>user\n<m1>\nHi<|im_end|>\n"


def test_bad_modality_inputs_raise_clear_errors(with_modalities, tmp_path):
    _, model, processor = with_modalities
    with pytest.raises(ValueError, match="modality 'm9' is unknown to this processor; it knows: m1, m2"):
        processor(text="<m1>", modality_embeds={"m9": _vectors(0, (12,))})
    with pytest.raises(ValueError, match="2 <m1> placeholders but 1 m1 embeddings"):
        processor(text="<m1><m1>", modality_embeds={"m1": _vectors(0, (12,))})
    with pytest.raises(ValueError, match=r"a 'm1' embedding has shape \(\); expected \(dim,\) or \(n, dim\)"):
        processor(text="<m1>", modality_embeds={"m1": [torch.tensor(1.0)]})
    inputs = processor(text="<m1>", modality_embeds={"m1": _vectors(0, (12,))}, return_tensors="pt")
    with pytest.raises(ValueError, match=r"modality 'm1' item 0 has shape \(5,\); expected \(12,\) or \(n, 12\)"):
        model(input_ids=inputs["input_ids"], modality_embeds={"m1": [torch.zeros(5)]})
    with pytest.raises(ValueError, match="modality 'm3' is unknown; this model has: m1, m2"):
        model(input_ids=inputs["input_ids"], modality_embeds={"m1": _vectors(0, (12,)), "m3": [torch.zeros(4)]})
    with pytest.raises(ValueError, match="holds 1 <m1> placeholder tokens but the 'm1' embeddings give 3 vectors"):
        model(input_ids=inputs["input_ids"], modality_embeds={"m1": [torch.zeros(3, 12)]})
    with pytest.raises(ValueError, match=r"m1 placeholder tokens but no modality_embeds\['m1'\]"):
        model(input_ids=inputs["input_ids"])
    with pytest.raises(ValueError, match="modality 'm1' exists already"):
        add_modality(model, processor, "m1", input_dim=3)
    with pytest.raises(ValueError, match="embedding file .* does not exist"):
        LlavaQwen3Generator(TorchBackend(model, processor)).generate(
            {"text": "<m1>", "multimodal_data": {"multimodal_embeddings": {"m1": [tmp_path / "missing.npy"]}}}
        )


def test_worked_example_clip_embeddings_as_m1(tiny_clip, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    clip_config = CLIPVisionConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=24,
    )
    CLIPVisionModelWithProjection(clip_config).save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        tmp_path / "clip"
    )
    draw_image(11).save(tmp_path / "photo.png")
    example = Path(__file__).parents[1] / "examples" / "clip_embeddings_as_m1.py"
    result = subprocess.run(
        [
            sys.executable,
            str(example),
            "--clip",
            str(tmp_path / "clip"),
            "--checkpoint",
            str(tiny_clip[0]),
            "--image",
            str(tmp_path / "photo.png"),
            "--output",
            str(tmp_path / "with-m1"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "m1: CLIP embedding of photo.png, 24 values" in result.stdout and "\nA: " in result.stdout
    saved = LlavaQwen3ForConditionalGeneration.from_pretrained(tmp_path / "with-m1")
    assert saved.config.modalities["m1"]["input_dim"] == 24
