"""Train LLaVA-Qwen3: `llava-qwen3-train [--preset debug|small_scale|full_scale] [--config FILE] [--resume [DIR]]
key=value ...`.

Stages: `projector` (stage 1: only projectors learn), `lora` (stage 2: LoRA on the language model, projectors in
full), `full` (stage 2: projectors and language model; `train_vision_tower=true` adds the tower). The run writes
checkpoints (`checkpoint-N/`), the final model or adapter with its processor, `training_config.json`,
`train_results.json` and the loss log in `trainer_state.json`. Under `accelerate launch` it runs on every process
(DDP, FSDP, DeepSpeed: configs/accelerate/). `data` naming a folder of parquet shards streams them.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule
from transformers import BitsAndBytesConfig, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from ..commands import exit_on_error
from ..modeling import LlavaQwen3ForConditionalGeneration
from ..processing import LlavaQwen3Processor
from .collator import ChatCollator
from .config import PRESETS, TrainConfig, load_config
from .data import RecordDataset
from .stages import configure_stage, model_parts
from .streaming import (
    StreamCollator,
    StreamingRecords,
    StreamProgress,
    is_shard_folder,
    load_stream_state,
    steps_for,
)
from .trainer import LlavaQwen3Trainer

logger = logging.getLogger(__name__)
TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])


def streams(config: TrainConfig) -> bool:
    """Whether `config.data` names a folder of shards to stream."""
    return isinstance(config.data, str) and is_shard_folder(config.data)


def training_arguments(config: TrainConfig) -> TrainingArguments:
    """The Trainer's arguments for `config`."""
    learning_rate, _ = config.part_learning_rates()
    streamed = streams(config)
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
        # A stream is split between processes by datasets, not dispatched from the first one, and resumes from the
        # position each checkpoint holds instead of reading past the batches trained on.
        accelerator_config={"dispatch_batches": False} if streamed else None,
        ignore_data_skip=streamed,
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


def checkpoint_to_resume(output: Path, resume: str | bool | None) -> str | None:
    """The checkpoint folder `--resume` names: DIR, or the latest checkpoint-N of `output`."""
    if not resume:
        return None
    checkpoint = resume if isinstance(resume, str) else get_last_checkpoint(str(output)) if output.is_dir() else None
    if checkpoint is None or not Path(checkpoint).is_dir():
        raise ValueError(f"--resume: {checkpoint or output} holds no checkpoint-N folder to continue from.")
    return str(checkpoint)


def streaming_data(
    config: TrainConfig, args: TrainingArguments, collator: ChatCollator, checkpoint: str | None
) -> tuple[StreamingRecords, StreamProgress]:
    """The shard folder `config.data` as this process's stream, from the checkpoint's position when resuming; sets
    `args.max_steps` from the shards' record count unless `max_steps` is given (a stream has no length)."""
    if config.group_by_length:
        raise ValueError("group_by_length needs every record's length up front; streamed shards have none.")
    workers = config.dataloader_workers
    start = load_stream_state(checkpoint, args.process_index, args.world_size, workers) if checkpoint else None
    dataset = StreamingRecords(
        config.data,
        collator.check_example,
        config.image_folder,
        seed=config.seed,
        shuffle_buffer=config.shuffle_buffer,
        rank=args.process_index,
        world_size=args.world_size,
        on_bad_record=config.on_bad_record,
        start=start,
    )
    if config.max_steps <= 0:
        batch, accumulation = config.batch_size, config.gradient_accumulation_steps
        args.max_steps = steps_for(dataset.records, config.epochs, batch, accumulation, args.world_size)
    return dataset, StreamProgress(start)


def total_over_processes(count: int, device: torch.device) -> int:
    """The sum of `count` over all processes (the count itself in a single process)."""
    if not torch.distributed.is_initialized():
        return count
    total = torch.tensor([count], device=device)
    torch.distributed.all_reduce(total)
    return int(total)


def save_trained_model(trainer: LlavaQwen3Trainer, output: Path) -> None:
    """The final model (or adapter) whole, in safetensors. FSDP with a sharded state dict (what resume needs in the
    checkpoints) makes the Trainer's save_model write nothing whole, so the weights are gathered here."""
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if plugin is None or "FULL_STATE_DICT" in str(plugin.state_dict_type):
        trainer.save_model(str(output))
        return
    if plugin.fsdp_version == 2:
        # Gathered into CPU memory; tensors already on the CPU are gathered as they are, as offloading them would
        # leave views of buffers FSDP frees again.
        options = StateDictOptions(full_state_dict=True, cpu_offload=trainer.args.device.type != "cpu")
        state_dict = get_model_state_dict(trainer.model, options=options)
    else:
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.args.should_save:  # every process took part in the gather
        model = trainer.accelerator.unwrap_model(trainer.model)
        with original_class(model):
            model.save_pretrained(output, state_dict=state_dict)


@contextmanager
def original_class(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, an FSDP2-sharded `model` is an instance of its own class again: fully_shard makes it one of
    a generated subclass, and save_pretrained would copy that subclass's source (torch's) as the remote code."""
    sharded_class = type(model)
    if not issubclass(sharded_class, FSDPModule):
        yield
        return
    model.__class__ = next(base for base in sharded_class.__mro__[1:] if not issubclass(base, FSDPModule))
    try:
        yield
    finally:
        model.__class__ = sharded_class


def run_training(config: TrainConfig, resume: str | bool | None = None) -> Path:
    """Trains as `config` says; returns the output folder."""
    if not config.model or not config.data:
        raise ValueError("model and data are required (e.g. model=path/to/checkpoint data=train.json).")
    output = Path(config.output_dir)
    check_output_dir(output, resume=bool(resume), overwrite=config.overwrite_output_dir)
    checkpoint = checkpoint_to_resume(output, resume)
    processor = LlavaQwen3Processor.from_pretrained(config.model)
    collator = ChatCollator(processor, max_length=config.max_length)
    args = training_arguments(config)
    progress = None
    if streams(config):
        dataset, progress = streaming_data(config, args, collator, checkpoint)
        collator = StreamCollator(collator)
    else:
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
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        part_learning_rates=part_rates,
        lengths=dataset.lengths if config.group_by_length else None,
        stream_progress=progress,
    )
    result = trainer.train(resume_from_checkpoint=checkpoint)
    if progress is not None:
        # Closes the stream's parquet readers now rather than at interpreter exit, where Arrow's threads can abort
        # the process (apache/arrow#45214).
        gc.collect()
    save_trained_model(trainer, output)
    if progress is None:
        skipped = len(dataset.skipped)
    else:  # each process counted the bad records of its own part of the stream
        skipped = total_over_processes(progress.skipped, args.device)
    trainer.save_metrics("train", {**result.metrics, "skipped_records": skipped})
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
    if torch.distributed.is_initialized():
        # An orderly end rather than the backend's teardown at exit. The barrier first: the sharded model keeps the
        # group's gloo threads alive past destroy_process_group, and one of them releasing the last collective's
        # tensors after the interpreter began to exit aborted a process ("terminate called without an active
        # exception", seen in CI); gloo's barrier ends only after the work queued before it.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    print(f"trained: {output}")


if __name__ == "__main__":
    main()
