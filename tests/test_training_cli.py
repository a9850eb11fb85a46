"""The train command: presets and overrides, a debug run end to end, resume, and `accelerate launch` on 2 CPUs."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import run_fresh_python

from llava_qwen3.training.cli import load_model, main
from llava_qwen3.training.config import load_config
from llava_qwen3.training.synthetic import write_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("shapes"), number=8, split="train", seed=0)


def _losses(output) -> dict[int, float]:
    state = json.loads((output / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def test_config_layers_presets_files_and_overrides(tmp_path):
    config = load_config("debug", overrides=["stage=lora", "lora_r=8", "data=x.json", 'report_to=["tensorboard"]'])
    assert (config.stage, config.lora_r, config.max_steps, config.data, config.report_to) == (
        "lora",
        8,
        6,
        "x.json",
        ["tensorboard"],
    )
    assert config.part_learning_rates() == (2e-4, {"projector": 2e-5})  # LLaVA-1.5's LoRA recipe
    assert load_config(overrides=["stage=projector"]).part_learning_rates() == (1e-3, {})
    assert load_config(overrides=["stage=full"]).part_learning_rates() == (2e-5, {})
    nanovlm = load_config(overrides=["learning_rate_recipe=nanovlm", "vision_learning_rate=5e-5"]).part_learning_rates()
    assert nanovlm == (1e-4, {"projector": 2e-3, "vision_tower": 5e-5, "language_model": 1e-4})
    (tmp_path / "run.json").write_text(json.dumps({"epochs": 3, "batch_size": 8}))
    from_file = load_config("full_scale", tmp_path / "run.json", ["batch_size=4"])
    assert (from_file.epochs, from_file.batch_size, from_file.gradient_accumulation_steps) == (3, 4, 8)
    with pytest.raises(ValueError, match="unknown config field 'epoch'"):
        load_config(overrides=["epoch=2"])
    with pytest.raises(ValueError, match="preset 'huge' is unknown"):
        load_config("huge")
    with pytest.raises(ValueError, match="stage 'stage3' is not one of"):
        load_config(overrides=["stage=stage3"])


def test_quantised_loading_without_a_gpu_says_so_and_loads_unquantised(tiny_clip, caplog, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # the same on a machine that has a GPU
    config = load_config("small_scale", overrides=[f"model={tiny_clip[0]}"])
    with caplog.at_level(logging.WARNING):
        model = load_model(config)
    assert "load_in=4bit needs bitsandbytes and a CUDA GPU" in caplog.text
    assert getattr(model, "hf_quantizer", None) is None and model.dtype == torch.float32
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())


def test_debug_run_writes_a_loadable_checkpoint_and_resume_continues_the_same_curve(tiny_clip, shapes_data, tmp_path):
    common = ["--preset", "debug", f"model={tiny_clip[0]}", f"data={shapes_data}", "lr_scheduler=constant"]
    main([*common, f"output_dir={tmp_path / 'a'}"])
    output = tmp_path / "a"
    for name in ("model.safetensors", "modeling_llava_qwen3.py", "processor_config.json", "training_config.json"):
        assert (output / name).is_file(), name
    assert json.loads((output / "train_results.json").read_text())["skipped_records"] == 0
    uninterrupted = _losses(output)
    assert sorted(uninterrupted) == [1, 2, 3, 4, 5, 6]
    run_fresh_python(
        f"""
        from transformers import AutoModelForImageTextToText, AutoProcessor
        AutoModelForImageTextToText.from_pretrained({str(output)!r}, trust_remote_code=True)
        AutoProcessor.from_pretrained({str(output)!r}, trust_remote_code=True)
        """,
        cwd=tmp_path,
    )

    # A run stopped after step 3, resumed: steps 4-6 follow the same curve.
    (tmp_path / "b").mkdir()
    shutil.copytree(output / "checkpoint-3", tmp_path / "b" / "checkpoint-3")
    main([*common, f"output_dir={tmp_path / 'b'}", "--resume"])
    resumed = _losses(tmp_path / "b")
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(uninterrupted[step], abs=1e-4), (step, resumed, uninterrupted)


def test_accelerate_launch_with_two_cpu_processes_runs_a_debug_training(tiny_clip, shapes_data, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--cpu",
            "-m",
            "llava_qwen3.training.cli",
            "--preset",
            "debug",
            f"model={tiny_clip[0]}",
            f"data={shapes_data}",
            f"output_dir={tmp_path / 'ddp'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = json.loads((tmp_path / "ddp" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert (tmp_path / "ddp" / "model.safetensors").is_file()
