"""Training: chat examples -> collator (assistant-only labels) -> transformers' Trainer, stage by stage."""

from .collator import IGNORE_INDEX, ChatCollator, from_llava_record
from .stages import STAGES, configure_stage, model_parts, parameter_groups
from .trainer import LlavaQwen3Trainer

__all__ = [
    "IGNORE_INDEX",
    "STAGES",
    "ChatCollator",
    "LlavaQwen3Trainer",
    "configure_stage",
    "from_llava_record",
    "model_parts",
    "parameter_groups",
]
