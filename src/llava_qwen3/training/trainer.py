"""transformers' Trainer with per-part learning rates; everything else (mixed precision, accumulation, checkpoints,
resume, logging integrations, accelerate/DeepSpeed/FSDP) is the Trainer's own."""

from __future__ import annotations

from typing import Any

from transformers import Trainer

from .stages import parameter_groups


class LlavaQwen3Trainer(Trainer):
    """A Trainer whose optimizer gives each model part (`vision_tower`, `projector`, `language_model`) its own
    learning rate; parts not named use `args.learning_rate`."""

    def __init__(self, *args: Any, part_learning_rates: dict[str, float] | None = None, **kwargs: Any) -> None:
        self.part_learning_rates = dict(part_learning_rates or {})
        super().__init__(*args, **kwargs)

    def create_optimizer(self, *args: Any, **kwargs: Any):
        if self.optimizer is None:
            optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, self.model)
            optimizer_kwargs.pop("lr", None)
            groups = parameter_groups(
                self.model, self.part_learning_rates, self.args.learning_rate, self.args.weight_decay
            )
            self.optimizer = optimizer_cls(groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer
