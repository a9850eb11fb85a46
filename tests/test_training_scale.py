"""Training past one process: the shipped accelerate configs (FSDP, DeepSpeed ZeRO-3) on two CPU processes over gloo
give the loss curve of one process with the same global batch, resume from their sharded checkpoints on the same
curve, and leave a checkpoint that loads with from_pretrained; the efficiency knobs (gradient accumulation, gradient
checkpointing, bf16, length-grouped batches) each do what they say."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT, colour_examples, run_fresh_python, training_args

from llava_qwen3 import LlavaQwen3ForConditionalGeneration
from llava_qwen3.training import ChatCollator, LlavaQwen3Trainer, configure_stage
from llava_qwen3.training.cli import main
from llava_qwen3.training.shards import write_shards
from llava_qwen3.training.synthetic import write_dataset

CONFIGS = ROOT / "configs" / "accelerate"


@pytest.fixture(scope="module")
def shapes_shards(tmp_path_factory):
    """24 records in one shard: with one shard, datasets deals records to the processes in turn, so the two
    processes' batches of a step are together the one process's batch."""
    folder = tmp_path_factory.mktemp("scale")
    records = write_dataset(folder / "data", number=8, split="train", seed=0)
    return write_shards(records, records.parent, folder / "shards") and folder / "shards"


def _losses(output: Path) -> dict[int, float]:
    state = json.loads((output / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def _run_arguments(model: Path, shards: Path, output: Path) -> list[str]:
    return ["--preset", "debug", f"model={model}", f"data={shards}", f"output_dir={output}", "lr_scheduler=constant"]


def _launch(config_name: str, script: list[str], arguments: list[str], tmp_path: Path, **changes) -> None:
    """`accelerate launch` with a shipped config, on two processes without mixed precision."""
    config = yaml.safe_load((CONFIGS / config_name).read_text())
    config.update(num_processes=2, mixed_precision="no", **changes)
    config_file = tmp_path / f"cpu-{config_name}"
    config_file.write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file), *script]
    result = subprocess.run([*command, *arguments], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


@pytest.fixture(scope="module")
def one_process_run(tiny_clip, shapes_shards, tmp_path_factory):
    """The reference: one process, batch 4 (the global batch of two processes of 2)."""
    output = tmp_path_factory.mktemp("one-process") / "run"
    main([*_run_arguments(tiny_clip[0], shapes_shards, output), "batch_size=4"])
    return output


def _check_two_processes_against_one(launch, one_process_run, tiny_clip, shapes_shards, tmp_path):
    """Runs `launch(arguments)` for a whole run, then for a resumed one, against the one-process curve."""
    reference = _losses(one_process_run)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    launch(_run_arguments(tiny_clip[0], shapes_shards, whole))
    curve = _losses(whole)
    print(f"one process: {reference}\ntwo processes: {curve}")
    assert sorted(curve) == [1, 2, 3, 4, 5, 6]
    for step, loss in reference.items():
        assert curve[step] == pytest.approx(loss, abs=1e-4), (step, curve, reference)
    final = dict(LlavaQwen3ForConditionalGeneration.from_pretrained(whole).named_parameters())
    for name, expected in LlavaQwen3ForConditionalGeneration.from_pretrained(one_process_run).named_parameters():
        torch.testing.assert_close(final[name], expected, atol=1e-5, rtol=1e-4, msg=name)

    resumed.mkdir()  # a run stopped after step 3, continued from its sharded checkpoint
    shutil.copytree(whole / "checkpoint-3", resumed / "checkpoint-3")
    launch([*_run_arguments(tiny_clip[0], shapes_shards, resumed), "--resume"])
    continued = _losses(resumed)
    for step in (4, 5, 6):
        assert continued[step] == pytest.approx(curve[step], abs=1e-4), (step, continued, curve)

    run_fresh_python(
        f"""
        from transformers import AutoModelForImageTextToText, AutoProcessor
        AutoModelForImageTextToText.from_pretrained({str(resumed)!r}, trust_remote_code=True)
        AutoProcessor.from_pretrained({str(resumed)!r}, trust_remote_code=True)
        """,
        cwd=tmp_path,
    )


# The parallel engines run the same way on both transformers lines: transformers 5 only, as CI's time is short.
@pytest.mark.slow
@pytest.mark.one_line
def test_fsdp_on_two_cpu_processes_follows_one_process_resumes_and_loads(
    one_process_run, tiny_clip, shapes_shards, tmp_path
):
    def launch(arguments):
        _launch("fsdp.yaml", [str(ROOT / "tests" / "cpu_fsdp.py")], arguments, tmp_path, use_cpu=True)

    _check_two_processes_against_one(launch, one_process_run, tiny_clip, shapes_shards, tmp_path)
    checkpoint = tmp_path / "whole" / "checkpoint-3"
    assert (checkpoint / "pytorch_model_fsdp_0").is_dir(), "FSDP checkpoints keep the sharded state dict"
    assert not (checkpoint / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.one_line
def test_deepspeed_zero3_on_two_cpu_processes_follows_one_process_resumes_and_loads(
    one_process_run, tiny_clip, shapes_shards, tmp_path
):
    def launch(arguments):
        _launch("deepspeed_zero3.yaml", ["-m", "llava_qwen3.training.cli"], arguments, tmp_path)

    _check_two_processes_against_one(launch, one_process_run, tiny_clip, shapes_shards, tmp_path)
    assert any((tmp_path / "whole" / "checkpoint-3").glob("global_step*")), "DeepSpeed's own partitioned states"


@pytest.mark.slow
@pytest.mark.one_line
@pytest.mark.parametrize(
    ("config_name", "script", "stage", "changes"),
    [
        ("fsdp.yaml", [str(ROOT / "tests" / "cpu_fsdp.py")], "projector", {"use_cpu": True}),
        ("deepspeed_zero2.yaml", ["-m", "llava_qwen3.training.cli"], "lora", {}),
    ],
)
def test_the_other_stages_train_under_the_parallel_configs(
    config_name, script, stage, changes, tiny_clip, shapes_shards, tmp_path
):
    """Stage 1 (projector only) under FSDP and stage 2 with LoRA under ZeRO-2: what should learn learns, what is
    frozen stays as it was, and the result (a model, or an adapter with its projectors) loads."""
    output = tmp_path / "run"
    arguments = [*_run_arguments(tiny_clip[0], shapes_shards, output), f"stage={stage}", "max_steps=2"]
    _launch(config_name, script, [*arguments, "save_steps=10"], tmp_path, **changes)
    assert len(_losses(output)) == 2
    before = dict(LlavaQwen3ForConditionalGeneration.from_pretrained(tiny_clip[0]).named_parameters())
    if stage == "lora":
        from peft import PeftModel

        base = LlavaQwen3ForConditionalGeneration.from_pretrained(tiny_clip[0])
        trained = PeftModel.from_pretrained(base, output).merge_and_unload()
    else:
        trained = LlavaQwen3ForConditionalGeneration.from_pretrained(output)
    changed = {name for name, value in trained.named_parameters() if not torch.equal(value, before[name])}
    assert any("multi_modal_projector" in name for name in changed), changed
    assert not any("vision_tower" in name for name in changed), changed
    language_model_changed = any("language_model" in name for name in changed)
    assert language_model_changed == (stage == "lora"), changed  # LoRA's update merged into the decoder's weights


def _train(processor, model, tmp_path, **arguments) -> list[float]:
    """Trains `model` on the four colour examples; returns the loss of each step."""
    args = training_args(tmp_path, lr_scheduler_type="constant", max_steps=2, **arguments)
    collator = ChatCollator(processor)
    trainer = LlavaQwen3Trainer(model=model, args=args, train_dataset=colour_examples(), data_collator=collator)
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def _fresh_model(folder: Path) -> LlavaQwen3ForConditionalGeneration:
    model = LlavaQwen3ForConditionalGeneration.from_pretrained(folder)
    configure_stage(model, "full")
    return model


def test_gradient_accumulation_with_checkpointing_gives_the_whole_batch_run(tiny_clip, tmp_path):
    folder, _, processor = tiny_clip
    whole_model, accumulated_model = _fresh_model(folder), _fresh_model(folder)
    whole = _train(processor, whole_model, tmp_path / "whole", per_device_train_batch_size=4)
    accumulated = _train(
        processor,
        accumulated_model,
        tmp_path / "accumulated",
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        gradient_checkpointing=True,
    )
    assert accumulated_model.is_gradient_checkpointing
    assert accumulated == pytest.approx(whole, abs=1e-5)
    for (name, trained), reference in zip(accumulated_model.named_parameters(), whole_model.parameters(), strict=True):
        torch.testing.assert_close(trained, reference, atol=1e-5, rtol=1e-4, msg=name)


def test_length_grouped_batches_keep_pictures_and_text_apart(tiny_clip, tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from llava_qwen3.training.data import RecordDataset

    write_dataset(tmp_path, number=16, split="train", seed=0)  # 48 records with a picture
    text_only = [
        {"id": f"text-{n}", "conversations": [{"from": "human", "value": "Hi " * n}, {"from": "gpt", "value": "Hello"}]}
        for n in range(1, 49)
    ]
    records = json.loads((tmp_path / "train.json").read_text())
    (tmp_path / "mixed.json").write_text(json.dumps([*text_only[:24], *records, *text_only[24:]]))
    dataset = RecordDataset(tmp_path / "mixed.json")
    assert [length > 0 for length in dataset.lengths] == [False] * 24 + [True] * 48 + [False] * 24
    trainer = LlavaQwen3Trainer(
        model=_fresh_model(tiny_clip[0]),
        args=training_args(tmp_path, per_device_train_batch_size=4),
        train_dataset=dataset,
        data_collator=ChatCollator(tiny_clip[2]),
        lengths=dataset.lengths,
    )
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler)
    order = list(sampler)
    assert sorted(order) == list(range(96))
    batches = [{dataset.lengths[index] > 0 for index in order[start : start + 4]} for start in range(0, 96, 4)]
    # Sorted by length within each of the 4 megabatches of 24, pictures (positive) before text (negative): at most
    # one batch per megabatch mixes them, where a random order would mix most of the 24.
    assert sum(len(kinds) > 1 for kinds in batches) <= 4, batches


def test_bf16_mixed_precision_trains_with_fp32_master_weights(tiny_clip, tmp_path):
    folder, _, processor = tiny_clip
    fp32_model, bf16_model = _fresh_model(folder), _fresh_model(folder)
    fp32 = _train(processor, fp32_model, tmp_path / "fp32", per_device_train_batch_size=4)
    bf16 = _train(processor, bf16_model, tmp_path / "bf16", per_device_train_batch_size=4, bf16=True)
    assert bf16 == pytest.approx(fp32, abs=0.05) and bf16 != fp32  # bf16 matmuls: close, not the same
    assert all(parameter.dtype == torch.float32 for parameter in bf16_model.parameters())
