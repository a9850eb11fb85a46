"""The model half: configuration and the modules that run on tensors (remote-code files)."""

from .configuration_llava_qwen3 import LlavaQwen3Config
from .modeling_llava_qwen3 import (
    LlavaQwen3ForConditionalGeneration,
    LlavaQwen3Model,
    LlavaQwen3MultiModalProjector,
    LlavaQwen3PreTrainedModel,
)

__all__ = [
    "LlavaQwen3Config",
    "LlavaQwen3ForConditionalGeneration",
    "LlavaQwen3Model",
    "LlavaQwen3MultiModalProjector",
    "LlavaQwen3PreTrainedModel",
]
