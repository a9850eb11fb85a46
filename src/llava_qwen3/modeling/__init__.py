"""The model half: configuration and the modules that run on tensors (remote-code files).

The configuration needs only transformers; the modules need torch and are importable where it is installed.
"""

from transformers.utils import is_torch_available

from .configuration_llava_qwen3 import LlavaQwen3Config

__all__ = ["LlavaQwen3Config"]

if is_torch_available():
    from .modeling_llava_qwen3 import (
        CACHE_ARGUMENT,
        MODEL_PARTS,
        LlavaQwen3ForConditionalGeneration,
        LlavaQwen3Model,
        LlavaQwen3MultiModalProjector,
        LlavaQwen3PreTrainedModel,
    )

    __all__ += [
        "CACHE_ARGUMENT",
        "MODEL_PARTS",
        "LlavaQwen3ForConditionalGeneration",
        "LlavaQwen3Model",
        "LlavaQwen3MultiModalProjector",
        "LlavaQwen3PreTrainedModel",
    ]
