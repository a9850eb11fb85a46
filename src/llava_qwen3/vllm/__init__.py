"""vLLM plugin: serve LLaVA-Qwen3 checkpoints with vLLM (continuous batching, paged KV cache, tensor parallelism).

vLLM finds the plugin through the `vllm.general_plugins` entry point of this package and calls `register()` in every
process it starts (the API server, the engine core, each worker). Nothing else in the package imports this module:
it is the only part that needs vLLM.

    pip install "llava-qwen3[vllm]"
    python -m vllm.entrypoints.openai.api_server --model CHECKPOINT --trust-remote-code
"""

from __future__ import annotations

# The name saved in the checkpoint's config.json `architectures`, and where vLLM imports the class that runs it.
# vLLM imports the model module only when a checkpoint asks for it, so registering stays cheap in every process.
ARCHITECTURE = "LlavaQwen3ForConditionalGeneration"
MODEL_CLASS = "llava_qwen3.vllm.model:LlavaQwen3ForConditionalGeneration"


def register() -> None:
    """Registers the config with transformers' `AutoConfig` and the architecture with vLLM's `ModelRegistry`.

    Safe to call any number of times, in any process.
    """
    from transformers import AutoConfig
    from vllm import ModelRegistry

    from ..modeling import LlavaQwen3Config

    AutoConfig.register(LlavaQwen3Config.model_type, LlavaQwen3Config, exist_ok=True)
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
