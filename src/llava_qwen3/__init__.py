"""LLaVA-Qwen3: a transformers-compatible vision-language model (CLIP/SigLIP tower, MLP projector, Qwen3).

Importing the package registers the classes with transformers' Auto classes, so `AutoModelForImageTextToText`,
`AutoProcessor` and `pipeline("image-text-to-text")` resolve `model_type="llava_qwen3"` without remote code, and
`save_pretrained` copies the remote-code files next to the weights so that the folder also loads where this package
is not installed.

Where torch is not installed only the configuration, the processor and the onnxruntime runner
(`llava_qwen3.inference.onnx_runner`) are importable: the deployment path of an ONNX export.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor
from transformers.utils import is_torch_available

from .modeling import LlavaQwen3Config
from .processing import CHAT_TEMPLATE, LlavaQwen3Processor

__version__ = "0.1.0"
__all__ = ["CHAT_TEMPLATE", "LlavaQwen3Config", "LlavaQwen3Processor"]

AutoConfig.register(LlavaQwen3Config.model_type, LlavaQwen3Config, exist_ok=True)
AutoProcessor.register(LlavaQwen3Config, LlavaQwen3Processor, exist_ok=True)
# Makes save_pretrained copy the remote-code files and write their auto_map entries.
LlavaQwen3Config.register_for_auto_class("AutoConfig")
LlavaQwen3Processor.register_for_auto_class("AutoProcessor")

if is_torch_available():
    from .inference import LlavaQwen3Generator
    from .modeling import LlavaQwen3ForConditionalGeneration, LlavaQwen3Model, LlavaQwen3PreTrainedModel

    AutoModel.register(LlavaQwen3Config, LlavaQwen3Model, exist_ok=True)
    AutoModelForImageTextToText.register(LlavaQwen3Config, LlavaQwen3ForConditionalGeneration, exist_ok=True)
    try:  # transformers 4.x only; 5.x removed this auto class
        from transformers import AutoModelForVision2Seq
    except ImportError:
        pass
    else:
        AutoModelForVision2Seq.register(LlavaQwen3Config, LlavaQwen3ForConditionalGeneration, exist_ok=True)
    LlavaQwen3Model.register_for_auto_class("AutoModel")
    LlavaQwen3ForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")

    __all__ += [
        "LlavaQwen3ForConditionalGeneration",
        "LlavaQwen3Generator",
        "LlavaQwen3Model",
        "LlavaQwen3PreTrainedModel",
    ]
