"""Training configuration: defaults from the published recipes, then a preset, a config file, and `key=value`
overrides, each later one winning.

Learning-rate recipes: `llava` (LLaVA-1.5: stage 1 projector 1e-3; stage 2 full 2e-5, or LoRA r=128, alpha=256
at 2e-4 with the projector at 2e-5; cosine schedule, 3% warmup) and `nanovlm` (nanoVLM's per-part rates:
projector 2e-3, vision tower and language model 1e-4).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..record_sources import ON_BAD_RECORD
from .stages import STAGES

PRESETS_FOLDER = Path(__file__).parent / "presets"
PRESETS = tuple(sorted(path.stem for path in PRESETS_FOLDER.glob("*.json")))
STAGE_LEARNING_RATES = {  # (default rate, projector rate) per stage, LLaVA-1.5
    "projector": (1e-3, None),
    "lora": (2e-4, 2e-5),
    "full": (2e-5, None),
}
assert set(STAGE_LEARNING_RATES) == set(STAGES)
QWEN3_LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
NANOVLM_LEARNING_RATES = {"projector": 2e-3, "vision_tower": 1e-4, "language_model": 1e-4}


@dataclass
class TrainConfig:
    """Everything one training run needs; see docs/training.md for each field."""

    model: str = ""
    data: str = ""
    image_folder: str | None = None
    output_dir: str = "runs/llava-qwen3"
    overwrite_output_dir: bool = False
    stage: str = "projector"
    train_vision_tower: bool = False
    learning_rate_recipe: str = "llava"
    learning_rate: float | None = None
    projector_learning_rate: float | None = None
    vision_learning_rate: float | None = None
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: list(QWEN3_LINEAR_LAYERS))
    load_in: str | None = None
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    max_length: int | None = 2048
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 2
    report_to: list[str] = field(default_factory=list)
    on_bad_record: str = "skip"
    dataloader_workers: int = 0
    group_by_length: bool = False  # LLaVA's group_by_modality_length (JSON and `datasets` data only)
    shuffle_buffer: int = 1000  # records in the shuffle buffer of streamed shards
    seed: int = 42

    def __post_init__(self) -> None:
        checks = {
            "stage": (self.stage, STAGES),
            "learning_rate_recipe": (self.learning_rate_recipe, ("llava", "nanovlm")),
            "load_in": (self.load_in, (None, "8bit", "4bit")),
            "precision": (self.precision, ("auto", "fp32", "bf16", "fp16")),
            "on_bad_record": (self.on_bad_record, ON_BAD_RECORD),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"{name} {value!r} is not one of {', '.join(map(str, allowed))}.")
        if self.shuffle_buffer < 1:
            raise ValueError(
                f"shuffle_buffer must be at least 1 (1: no shuffling within shards), not {self.shuffle_buffer}."
            )

    def part_learning_rates(self) -> tuple[float, dict[str, float]]:
        """The default learning rate and the per-part ones this configuration asks for."""
        if self.learning_rate_recipe == "nanovlm":
            default, parts = NANOVLM_LEARNING_RATES["language_model"], dict(NANOVLM_LEARNING_RATES)
        else:
            default, projector = STAGE_LEARNING_RATES[self.stage]
            parts = {"projector": projector} if projector is not None else {}
        default = self.learning_rate if self.learning_rate is not None else default
        explicit = {"projector": self.projector_learning_rate, "vision_tower": self.vision_learning_rate}
        parts.update({part: rate for part, rate in explicit.items() if rate is not None})
        return default, parts

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _parse_override(override: str) -> tuple[str, Any]:
    key, separator, text = override.partition("=")
    if not separator:
        raise ValueError(f"override {override!r} must look like key=value.")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text  # a bare string: a path, a model id
    return key.strip().replace("-", "_"), value


def load_config(preset: str | None = None, file: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Defaults, then `preset`, then the JSON `file`, then `overrides` ("key=value", values parsed as JSON)."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"preset {preset!r} is unknown; presets: {', '.join(PRESETS)}.")
        values.update(json.loads((PRESETS_FOLDER / f"{preset}.json").read_text()))
    if file is not None:
        if not Path(file).is_file():
            raise ValueError(f"config file {file} does not exist.")
        values.update(json.loads(Path(file).read_text()))
    values.update(_parse_override(override) for override in overrides)
    known = {item.name for item in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config field {unknown[0]!r}; fields: {', '.join(sorted(known))}.")
    return TrainConfig(**values)
