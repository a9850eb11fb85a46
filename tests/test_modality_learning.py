"""A tiny model learns to read an attribute from m1 embeddings through the training part; shuffled embeddings
(which carry no information about the answer) leave it near chance. Proof that the modality path, the masks and
the merge are right."""

from __future__ import annotations

import pytest
import torch
from helpers import training_args

from llava_qwen3 import LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor
from llava_qwen3.conversion.modalities import add_modality
from llava_qwen3.training import ChatCollator, LlavaQwen3Trainer, configure_stage

pytestmark = pytest.mark.slow
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
QUESTION = "<m1>\nWhat colour is it?"


def _samples(codes: torch.Tensor, per_colour: int, seed: int) -> list[tuple[torch.Tensor, int]]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(COLOURS)).repeat(per_colour)
    vectors = codes[labels] + 0.5 * torch.randn(len(labels), codes.shape[1], generator=generator)
    return list(zip(vectors, labels.tolist(), strict=True))


def _train_and_score(folder, tmp_path, shuffle: bool) -> float:
    torch.manual_seed(0)
    model = LlavaQwen3ForConditionalGeneration.from_pretrained(folder)
    processor = LlavaQwen3Processor.from_pretrained(folder)
    add_modality(model, processor, "m1", input_dim=16)
    codes = torch.randn(len(COLOURS), 16, generator=torch.Generator().manual_seed(1))
    train = _samples(codes, per_colour=80, seed=2)
    if shuffle:  # the same vectors and answers, paired at random
        permutation = torch.randperm(len(train), generator=torch.Generator().manual_seed(3))
        train = [(train[int(i)][0], label) for i, (_, label) in zip(permutation, train, strict=True)]
    examples = [
        {
            "messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": COLOURS[label]}],
            "modality_embeds": {"m1": [vector]},
        }
        for vector, label in train
    ]
    configure_stage(model, "full")
    args = training_args(
        tmp_path,
        per_device_train_batch_size=16,
        num_train_epochs=4,
        max_steps=-1,
        learning_rate=3e-3,
        lr_scheduler_type="cosine",
        warmup_steps=4,
        logging_steps=10,
    )
    LlavaQwen3Trainer(model=model, args=args, train_dataset=examples, data_collator=ChatCollator(processor)).train()

    held_out = _samples(codes, per_colour=10, seed=4)
    prompt = processor.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True)
    inputs = processor(
        text=[prompt] * len(held_out), modality_embeds={"m1": [v for v, _ in held_out]}, return_tensors="pt"
    )
    model.eval()
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return sum(
        answer.strip().startswith(COLOURS[label]) for answer, (_, label) in zip(answers, held_out, strict=True)
    ) / len(held_out)


def test_tiny_model_learns_to_name_the_colour_from_m1_and_not_from_shuffled_embeddings(tiny_clip, tmp_path):
    folder = tiny_clip[0]
    accuracy = _train_and_score(folder, tmp_path / "real", shuffle=False)
    chance_accuracy = _train_and_score(folder, tmp_path / "shuffled", shuffle=True)
    print(f"held-out accuracy: {accuracy:.2f} with real embeddings, {chance_accuracy:.2f} with shuffled ones")
    assert accuracy >= 0.9
    assert chance_accuracy <= 0.35  # chance is 1/6
