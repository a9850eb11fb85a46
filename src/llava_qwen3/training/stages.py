"""Which parts train in each stage, and their learning rates.

- `projector` (stage 1, LLaVA's alignment): only the image projector and the modality projectors.
- `full` (stage 2): projectors and language model; the vision tower too with `train_vision_tower`.
"""

from __future__ import annotations

from torch import nn

from ..modeling import LlavaQwen3ForConditionalGeneration

STAGES = ("projector", "full")


def model_parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The model's parts, by the names learning rates and stages use (through a peft wrapper too)."""
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {
        "vision_tower": [model.model.vision_tower],
        "projector": [model.model.multi_modal_projector, model.model.modality_projectors],
        "language_model": [model.model.language_model, model.lm_head],
    }


def configure_stage(
    model: LlavaQwen3ForConditionalGeneration, stage: str, train_vision_tower: bool = False
) -> list[str]:
    """Sets `requires_grad` for `stage`; returns the names of the parts that train."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is unknown; expected one of {', '.join(STAGES)}.")
    training = {"projector"} if stage == "projector" else {"projector", "language_model"}
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
    unknown = set(learning_rates) - set(model_parts(model))
    if unknown:
        raise ValueError(
            f"learning rate for unknown part {sorted(unknown)[0]!r}; parts: {', '.join(model_parts(model))}."
        )
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
