"""Train and score a tiny model from scratch on the synthetic shapes: the demo checkpoint and the proof that the
image path learns (tests train it with real and with blanked pictures)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from PIL import Image
from transformers import TrainingArguments

from ..conversion import build_tiny_checkpoint
from ..conversion.writing import write_checkpoint
from ..modeling import LlavaQwen3ForConditionalGeneration
from ..processing import IMAGE_LINE, LlavaQwen3Processor
from .collator import ChatCollator
from .stages import configure_stage
from .synthetic import QUESTIONS, draw_scene, question_examples, random_scenes
from .trainer import LlavaQwen3Trainer


def _picture(scene, blank: bool) -> Image.Image:
    return Image.new("RGB", (64, 64), "white") if blank else draw_scene(scene)


def train_on_shapes(
    output: str | Path | None = None,
    scenes: int = 600,
    epochs: float = 12,
    learning_rate: float = 1e-3,
    blank: bool = False,
    seed: int = 0,
    tasks: tuple[str, ...] = tuple(QUESTIONS),
) -> tuple[LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor]:
    """A tiny model (32-px tower, 2+2 layers) trained end to end on `scenes` training pictures, asked about colour,
    shape and count (the `tasks`; "caption" adds or, alone, makes a captioning model: "three green squares");
    `blank` replaces every picture by a white one. Saved to `output` when given."""
    with tempfile.TemporaryDirectory() as scratch:
        model, processor = build_tiny_checkpoint(scratch, image_size=32, seed=seed)
        examples = [
            example
            for scene in random_scenes(scenes, "train", seed)
            for example in question_examples(scene, _picture(scene, blank))
            if example["attribute"] in tasks
        ]
        configure_stage(model, "full", train_vision_tower=True)  # from scratch: every part learns
        args = TrainingArguments(
            output_dir=str(Path(scratch) / "run"),
            per_device_train_batch_size=16,
            num_train_epochs=epochs,
            learning_rate=learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=10,
            logging_steps=50,
            save_strategy="no",
            report_to=[],
            remove_unused_columns=False,
            use_cpu=not torch.cuda.is_available(),
            seed=seed,
        )
        LlavaQwen3Trainer(model=model, args=args, train_dataset=examples, data_collator=ChatCollator(processor)).train()
    model.eval()
    if output is not None:
        write_checkpoint(model, processor, Path(output))  # whole or not at all: an interrupted save leaves nothing
    return model, processor


def shapes_accuracy(
    model: LlavaQwen3ForConditionalGeneration,
    processor: LlavaQwen3Processor,
    split: str = "train",
    number: int = 60,
    seed: int = 7,
    blank: bool = False,
) -> dict[str, float]:
    """Accuracy per attribute on `number` freshly drawn pictures of `split` (`train` combinations or the unseen
    `held_out` ones): the first word of the greedy answer must be the right one."""
    scenes = random_scenes(number, split, seed)
    accuracy = {}
    for attribute, question in QUESTIONS.items():
        prompt = processor.apply_chat_template(
            [{"role": "user", "content": IMAGE_LINE + question}], add_generation_prompt=True
        )
        inputs = processor(
            images=[[_picture(scene, blank)] for scene in scenes], text=[prompt] * len(scenes), return_tensors="pt"
        ).to(model.device)
        output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        correct = sum(
            answer.split()[:1] == [scene.answer(attribute)] for answer, scene in zip(answers, scenes, strict=True)
        )
        accuracy[attribute] = correct / len(scenes)
    return accuracy
