"""Train LLaVA-Qwen3: `llava-qwen3-train [--preset debug|small_scale|full_scale] [--config FILE] [--resume [DIR]]
key=value ...`.

Stages: `projector` (stage 1: only projectors learn), `lora` (stage 2: LoRA on the language model, projectors in
full), `full` (stage 2: projectors and language model; `train_vision_tower=true` adds the tower). The run writes
checkpoints (`checkpoint-N/`), the final model or adapter with its processor, `training_config.json`,
`train_results.json` and the loss log in `trainer_state.json`. Under `accelerate launch` it runs on every process.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import shutil
from pathlib import Path

import torch
import transformers
from transformers import BitsAndBytesConfig, TrainingArguments

from ..commands import exit_on_error
from ..modeling import LlavaQwen3ForConditionalGeneration
from ..processing import LlavaQwen3Processor
from .collator import ChatCollator
from .config import PRESETS, TrainConfig, load_config
from .data import RecordDataset
from .stages import configure_stage, model_parts
from .trainer import LlavaQwen3Trainer

logger = logging.getLogger(__name__)
TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])


def training_arguments(config: TrainConfig) -> TrainingArguments:
    """The Trainer's arguments for `config`."""
    learning_rate, _ = config.part_learning_rates()
    on_gpu = torch.cuda.is_available()
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "fp32"
    # transformers 5 takes the warmup ratio as a float warmup_steps; 4.x has warmup_ratio.
    warmup = {"warmup_steps": config.warmup_ratio} if TRANSFORMERS_MAJOR >= 5 else {"warmup_ratio": config.warmup_ratio}
    return TrainingArguments(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=learning_rate,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.lr_scheduler,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=config.report_to or "none",
        remove_unused_columns=False,
        gradient_checkpointing=config.gradient_checkpointing,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not on_gpu,
        dataloader_num_workers=config.dataloader_workers,
        seed=config.seed,
        **warmup,
    )


def load_model(config: TrainConfig) -> LlavaQwen3ForConditionalGeneration:
    """The starting checkpoint, quantised for `load_in` where bitsandbytes and a GPU allow it."""
    options = {}
    if config.load_in is not None:
        if torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None:
            bits = {"load_in_4bit": True} if config.load_in == "4bit" else {"load_in_8bit": True}
            options["quantization_config"] = BitsAndBytesConfig(**bits)
        else:
            logger.warning(
                "load_in=%s needs bitsandbytes and a CUDA GPU, and this machine lacks one of them: loading the "
                "model unquantised instead (set load_in=null to silence this).",
                config.load_in,
            )
    return LlavaQwen3ForConditionalGeneration.from_pretrained(config.model, **options)


def prepare_model(model: LlavaQwen3ForConditionalGeneration, config: TrainConfig) -> torch.nn.Module:
    """Freezes and wraps the model for the configured stage."""
    if config.stage != "lora":
        configure_stage(model, config.stage, config.train_vision_tower)
        return model
    from .lora import add_lora  # peft is needed for this stage only

    wrapped = add_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout, tuple(config.lora_targets))
    if config.train_vision_tower:
        for module in model_parts(wrapped)["vision_tower"]:
            module.requires_grad_(True)
    return wrapped


def check_output_dir(output: Path, resume: bool, overwrite: bool) -> None:
    """Refuses to train into a folder holding an earlier run, unless the run is resumed or replaced on purpose."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"output_dir {output} is a file; choose a folder.")
    if output.is_dir() and any(output.iterdir()) and not resume and not overwrite:
        raise ValueError(
            f"output_dir {output} already holds a run; continue it with --resume, replace it with "
            "overwrite_output_dir=true, or choose a new output_dir."
        )


def run_training(config: TrainConfig, resume: str | bool | None = None) -> Path:
    """Trains as `config` says; returns the output folder."""
    if not config.model or not config.data:
        raise ValueError("model and data are required (e.g. model=path/to/checkpoint data=train.json).")
    output = Path(config.output_dir)
    check_output_dir(output, resume=bool(resume), overwrite=config.overwrite_output_dir)
    processor = LlavaQwen3Processor.from_pretrained(config.model)
    collator = ChatCollator(processor, max_length=config.max_length)
    dataset = RecordDataset(
        config.data, config.image_folder, config.on_bad_record, check_example=collator.check_example
    )
    model = prepare_model(load_model(config), config)
    _, part_rates = config.part_learning_rates()
    if config.overwrite_output_dir and output.is_dir() and not resume:
        shutil.rmtree(
            output, ignore_errors=True
        )  # asked for: the earlier run goes, so no checkpoint of it is mistaken for this one's
    trainer = LlavaQwen3Trainer(
        model=model,
        args=training_arguments(config),
        train_dataset=dataset,
        data_collator=collator,
        part_learning_rates=part_rates,
    )
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(output))
    trainer.save_metrics("train", {**result.metrics, "skipped_records": len(dataset.skipped)})
    trainer.save_state()
    if trainer.is_world_process_zero():
        processor.save_pretrained(output)
        (output / "training_config.json").write_text(config.to_json())
    return output


def main(argv: list[str] | None = None) -> None:
    """Command line of run_training."""
    parser = argparse.ArgumentParser(
        prog="llava-qwen3-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=PRESETS)
    parser.add_argument("--config", help="JSON file of config fields")
    parser.add_argument("--resume", nargs="?", const=True, help="resume from the latest checkpoint, or from DIR")
    parser.add_argument("overrides", nargs="*", help="key=value (values parsed as JSON), e.g. stage=lora epochs=2")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with exit_on_error(parser):
        config = load_config(args.preset, args.config, args.overrides)
        output = run_training(config, resume=args.resume)
    print(f"trained: {output}")


if __name__ == "__main__":
    main()
