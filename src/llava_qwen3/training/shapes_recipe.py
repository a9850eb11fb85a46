"""Train and score a tiny model from scratch on the synthetic shapes: the demo checkpoint and the proof that the
image path learns (tests train it with real and with blanked pictures, and through streamed shards)."""

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
from .shards import write_shards
from .stages import configure_stage
from .streaming import StreamCollator, StreamingRecords, StreamProgress, steps_for
from .synthetic import QUESTIONS, draw_scene, question_examples, random_scenes, write_dataset
from .trainer import LlavaQwen3Trainer

BATCH_SIZE = 16


def _picture(scene, blank: bool) -> Image.Image:
    return Image.new("RGB", (64, 64), "white") if blank else draw_scene(scene)


def _streamed_shapes(scratch: Path, collator: ChatCollator, scenes: int, seed: int, tasks: tuple[str, ...]) -> dict:
    """The Trainer's data for the pictures written as PNGs, their records as parquet shards, streamed back."""
    records = write_dataset(scratch / "data", scenes, "train", seed, tasks=tasks)
    write_shards(records, records.parent, scratch / "shards")
    dataset = StreamingRecords(scratch / "shards", collator.check_example, seed=seed)
    return {"train_dataset": dataset, "data_collator": StreamCollator(collator), "stream_progress": StreamProgress()}


def train_on_shapes(
    output: str | Path | None = None,
    scenes: int = 600,
    epochs: float = 12,
    learning_rate: float = 1e-3,
    blank: bool = False,
    seed: int = 0,
    tasks: tuple[str, ...] = tuple(QUESTIONS),
    streaming: bool = False,
) -> tuple[LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor]:
    """A tiny model (32-px tower, 2+2 layers) trained end to end on `scenes` training pictures, asked about colour,
    shape and count (the `tasks`; "caption" adds or, alone, makes a captioning model: "three green squares");
    `blank` replaces every picture by a white one; `streaming` writes the pictures and records to disk as shards and
    trains on them streamed (`StreamingRecords`), as a large data set is. Saved to `output` when given."""
    if blank and streaming:
        raise ValueError("blank pictures are drawn in memory; train on them without streaming.")
    with tempfile.TemporaryDirectory() as scratch:
        model, processor = build_tiny_checkpoint(scratch, image_size=32, seed=seed)
        collator = ChatCollator(processor)
        if streaming:
            data = _streamed_shapes(Path(scratch), collator, scenes, seed, tasks)
            steps = steps_for(data["train_dataset"].records, epochs, BATCH_SIZE, 1, 1)
        else:
            examples = [
                example
                for scene in random_scenes(scenes, "train", seed)
                for example in question_examples(scene, _picture(scene, blank))
                if example["attribute"] in tasks
            ]
            data, steps = {"train_dataset": examples, "data_collator": collator}, -1
        configure_stage(model, "full", train_vision_tower=True)  # from scratch: every part learns
        args = TrainingArguments(
            output_dir=str(Path(scratch) / "run"),
            per_device_train_batch_size=BATCH_SIZE,
            num_train_epochs=epochs,
            max_steps=steps,
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
        LlavaQwen3Trainer(model=model, args=args, **data).train()
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
