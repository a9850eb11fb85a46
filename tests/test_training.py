"""Training: assistant-only labels, what each stage trains, per-part learning rates, learning through Trainer."""

from __future__ import annotations

import pytest
import torch
from helpers import colour_examples, draw_image, training_args

from llava_qwen3 import LlavaQwen3ForConditionalGeneration
from llava_qwen3.training import (
    IGNORE_INDEX,
    ChatCollator,
    LlavaQwen3Trainer,
    configure_stage,
    from_llava_record,
    parameter_groups,
)


def test_labels_cover_only_the_assistant_replies(tiny_clip):
    _, _, processor = tiny_clip
    record = {
        "conversations": [
            {"from": "human", "value": "<image>\nWhat shape is it?"},
            {"from": "gpt", "value": "A red circle."},
            {"from": "human", "value": "And the colour?"},
            {"from": "gpt", "value": "Red."},
        ]
    }
    short = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "assistant", "value": "Hello."}]}
    batch = ChatCollator(processor)([from_llava_record(record, [draw_image(1)]), from_llava_record(short)])
    labels, input_ids = batch["labels"], batch["input_ids"]
    assert batch["attention_mask"][1, -1] == 0, "training batches are right-padded"
    for row, replies in enumerate([["A red circle.", "Red."], ["Hello."]]):
        kept = labels[row][labels[row] != IGNORE_INDEX]
        assert processor.decode(kept) == "".join(reply + "<|im_end|>" for reply in replies)
        assert torch.equal(kept, input_ids[row][labels[row] != IGNORE_INDEX])
    image_positions = input_ids == processor.image_token_id
    assert image_positions.sum() == processor.image_seq_length and (labels[image_positions] == IGNORE_INDEX).all()
    assert (labels[batch["attention_mask"] == 0] == IGNORE_INDEX).all()


def test_bad_records_are_reported():
    with pytest.raises(ValueError, match="turn 0 of the record needs 'from'"):
        from_llava_record({"conversations": [{"from": "robot", "value": "x"}]})
    with pytest.raises(ValueError, match="no assistant turn"):
        from_llava_record({"conversations": [{"from": "human", "value": "x"}]})


def test_projector_stage_changes_only_projector_weights(tiny_clip, tmp_path):
    folder, _, processor = tiny_clip
    model = LlavaQwen3ForConditionalGeneration.from_pretrained(folder)
    assert configure_stage(model, "projector") == ["projector"]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    examples = colour_examples()
    LlavaQwen3Trainer(
        model=model, args=training_args(tmp_path), train_dataset=examples, data_collator=ChatCollator(processor)
    ).train()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(name.startswith("model.multi_modal_projector.") for name in changed), changed
    assert {n for n in before if n.startswith("model.multi_modal_projector.")} == changed


def test_part_learning_rates_reach_the_optimizer(tiny_clip):
    folder, _, _ = tiny_clip
    model = LlavaQwen3ForConditionalGeneration.from_pretrained(folder)
    configure_stage(model, "full", train_vision_tower=True)
    groups = parameter_groups(model, {"projector": 1e-3, "vision_tower": 2e-6}, default_lr=2e-5, weight_decay=0.1)
    by_lr = {}
    for group in groups:
        by_lr.setdefault(group["lr"], 0)
        by_lr[group["lr"]] += sum(p.numel() for p in group["params"])
    parts = model.model
    assert by_lr[1e-3] == sum(p.numel() for p in parts.multi_modal_projector.parameters())
    assert by_lr[2e-6] == sum(p.numel() for p in parts.vision_tower.parameters())
    assert by_lr[2e-5] == sum(p.numel() for p in parts.language_model.parameters()) + model.lm_head.weight.numel()
    with pytest.raises(ValueError, match="unknown part 'decoder'"):
        parameter_groups(model, {"decoder": 1.0}, default_lr=1e-3, weight_decay=0.0)
    with pytest.raises(ValueError, match="stage 'lora9' is unknown"):
        configure_stage(model, "lora9")


def test_stage_one_for_a_new_modality_from_records_with_embedding_files(tiny_clip, tmp_path):
    import numpy as np
    from safetensors.torch import save_file

    from llava_qwen3 import LlavaQwen3Processor
    from llava_qwen3.conversion.modalities import add_modality

    folder, _, _ = tiny_clip
    model = LlavaQwen3ForConditionalGeneration.from_pretrained(folder)
    processor = LlavaQwen3Processor.from_pretrained(folder)
    add_modality(model, processor, "m1", input_dim=8)
    records = []
    for index in range(4):
        vector = torch.randn(8)
        if index % 2:
            np.save(tmp_path / f"e{index}.npy", vector.numpy())
            item = str(tmp_path / f"e{index}.npy")
        else:
            save_file({"embedding": torch.stack([vector, -vector])}, tmp_path / f"e{index}.safetensors")
            item = tmp_path / f"e{index}.safetensors"
        records.append(
            {
                "conversations": [{"from": "human", "value": "<m1>\nWhat is it?"}, {"from": "gpt", "value": "A code."}],
                "multimodal_data": {"multimodal_embeddings": {"m1": [item]}},
            }
        )
    examples = [from_llava_record(record) for record in records]
    configure_stage(model, "projector")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    LlavaQwen3Trainer(
        model=model, args=training_args(tmp_path), train_dataset=examples, data_collator=ChatCollator(processor)
    ).train()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {n for n in before if n.startswith("model.modality_projectors.m1.")}


def test_lora_stage_trains_adapters_and_projector_and_merges_to_the_same_logits(tiny_clip, tmp_path):
    from llava_qwen3.training.lora import add_lora, main, merge_lora

    folder, _, processor = tiny_clip
    model = add_lora(LlavaQwen3ForConditionalGeneration.from_pretrained(folder), r=8, alpha=16)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    examples = colour_examples()
    trainer = LlavaQwen3Trainer(
        model=model,
        args=training_args(tmp_path),
        train_dataset=examples,
        data_collator=ChatCollator(processor),
        part_learning_rates={"projector": 2e-3},
    )
    trainer.train()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert any("lora_" in name for name in changed) and any("multi_modal_projector" in name for name in changed)
    assert all("lora_" in name or "multi_modal_projector.modules_to_save" in name for name in changed), changed
    assert not any("vision_tower" in name for name in changed)

    model.eval()
    inputs = processor(images=[draw_image(20)], text="<image> what colour?", return_tensors="pt")
    with torch.no_grad():
        adapter_logits = model(**inputs).logits
    model.save_pretrained(tmp_path / "adapter")
    merged = merge_lora(model)
    with torch.no_grad():
        assert torch.allclose(merged(**inputs).logits, adapter_logits, atol=1e-5)

    main([str(folder), str(tmp_path / "adapter"), "--output", str(tmp_path / "merged")])
    reloaded = LlavaQwen3ForConditionalGeneration.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in name for name, _ in reloaded.named_parameters())
    with torch.no_grad():
        assert torch.allclose(reloaded(**inputs).logits, adapter_logits, atol=1e-5)
