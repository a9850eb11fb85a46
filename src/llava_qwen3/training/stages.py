"""Which parts train in each stage, and their learning rates.

- `projector` (stage 1, LLaVA's alignment): only the image projector and the modality projectors.
- `lora` (stage 2): LoRA adapters on the language model's projections (see `lora.py`), the projectors in full.
- `full` (stage 2): projectors and language model; the vision tower too with `train_vision_tower`.

The parts are the model's own list, `MODEL_PARTS` (vision_tower, projector, language_model).
"""

from __future__ import annotations

from torch import nn

from ..modeling import MODEL_PARTS, LlavaQwen3ForConditionalGeneration

STAGES = ("projector", "lora", "full")
# The parts that train in full in the stages configure_stage sets up (`lora.add_lora` sets up its own).
STAGE_PARTS = {"projector": {"projector"}, "full": {"projector", "language_model"}}


def model_parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The model's parts by name (`MODEL_PARTS`), as their modules (through a peft wrapper too)."""
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    named = dict(model.named_modules())
    return {part: [named[prefix] for prefix in prefixes if prefix in named] for part, prefixes in MODEL_PARTS.items()}


def configure_stage(
    model: LlavaQwen3ForConditionalGeneration, stage: str, train_vision_tower: bool = False
) -> list[str]:
    """Sets `requires_grad` for `stage` (`projector` or `full`; `lora` is set up by `lora.add_lora`); returns the
    names of the parts that train."""
    if stage not in STAGE_PARTS:
        raise ValueError(f"stage {stage!r} is unknown to configure_stage; expected {' or '.join(STAGE_PARTS)}.")
    training = set(STAGE_PARTS[stage])
    if train_vision_tower:
        training.add("vision_tower")
    model.requires_grad_(False)
    for name, modules in model_parts(model).items():
        for module in modules:
            module.requires_grad_(name in training)
    return sorted(training)


def parameter_groups(
    model: nn.Module, learning_rates: dict[str, float], default_lr: float, weight_decay: float
) -> list[dict]:
    """Optimizer groups per part (trainable parameters only), each at its own learning rate."""
    unknown = set(learning_rates) - set(MODEL_PARTS)
    if unknown:
        raise ValueError(f"learning rate for unknown part {sorted(unknown)[0]!r}; parts: {', '.join(MODEL_PARTS)}.")
    groups = []
    for name, modules in model_parts(model).items():
        seen: set[int] = set()
        decay, no_decay = [], []
        for module in modules:
            for parameter_name, parameter in module.named_parameters():
                if not parameter.requires_grad or id(parameter) in seen:
                    continue
                seen.add(id(parameter))
                (no_decay if parameter.ndim < 2 or "norm" in parameter_name else decay).append(parameter)
        lr = learning_rates.get(name, default_lr)
        groups += [
            {"params": params, "lr": lr, "weight_decay": wd}
            for params, wd in ((decay, weight_decay), (no_decay, 0.0))
            if params
        ]
    return groups
