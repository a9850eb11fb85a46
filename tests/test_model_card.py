"""The model card: Hub front matter that parses, parameter counts that match the model, usage naming the repo."""

from __future__ import annotations

import pytest
import yaml

from llava_qwen3.hub import count_parameters, write_model_card


def test_model_card_front_matter_and_parameter_counts(tiny, tmp_path):
    folder, model, _ = tiny
    card_folder = tmp_path / "card"
    card_folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (card_folder / name).write_bytes((folder / name).read_bytes())
    path = write_model_card(card_folder, "org/tiny-llava-qwen3", base_models=["org/vision", "Qwen/Qwen3-0.6B"])

    text = path.read_text()
    assert text.startswith("---\n")
    front_matter = yaml.safe_load(text.split("---\n")[1])
    assert front_matter["library_name"] == "transformers"
    assert front_matter["pipeline_tag"] == "image-text-to-text"
    assert front_matter["base_model"] == ["org/vision", "Qwen/Qwen3-0.6B"]
    assert front_matter["license"] == "apache-2.0"
    assert {"llava", "qwen3"} <= set(front_matter["tags"])

    counts = count_parameters(card_folder)
    parts = model.model
    head = 0 if model.config.tie_word_embeddings else model.lm_head.weight.numel()  # a tied head is saved once
    assert counts["vision tower"] == sum(p.numel() for p in parts.vision_tower.parameters())
    assert counts["projector"] == sum(p.numel() for p in parts.multi_modal_projector.parameters())
    assert counts["language model"] == sum(p.numel() for p in parts.language_model.parameters()) + head
    assert f"**{sum(counts.values()):,}**" in text
    assert f"{model.config.image_seq_length} tokens per image" in text
    assert 'from_pretrained("org/tiny-llava-qwen3", trust_remote_code=True)' in text
    assert 'pipeline("image-text-to-text", model="org/tiny-llava-qwen3"' in text


def test_model_card_refuses_a_folder_that_is_not_this_model(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llava"}')
    with pytest.raises(ValueError, match="model_type 'llava', expected 'llava_qwen3'"):
        write_model_card(tmp_path, "org/x")
    assert not (tmp_path / "README.md").exists()
