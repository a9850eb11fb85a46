"""Tiny checkpoints vLLM's CPU engine can run, the prompts the vLLM tests send, and transformers' answers to them."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from helpers import draw_image
from PIL import Image
from safetensors.torch import load_file, save_file

from llava_qwen3 import LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor
from llava_qwen3.conversion import build_tiny_checkpoint
from llava_qwen3.conversion.modalities import add_modality

# vLLM's CPU attention takes head sizes 32, 64, 80, ...; the tiny default is 16.
ENGINE_TEXT_CONFIG = {"head_dim": 32}
# Engine settings for the tests: small KV cache (GiB), no graph capture, fp32 like the transformers reference.
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
ENGINE_ARGS = {"dtype": "float32", "enforce_eager": True, "max_model_len": 512, "trust_remote_code": True}
MAX_NEW_TOKENS = 8
MODALITY_DIMS = {"m1": 12, "m2": 7}


def build_engine_checkpoint(
    folder: Path, vision: str = "clip", with_modalities: bool = True, **config_overrides: object
) -> tuple[LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor]:
    """A tiny random checkpoint with heads vLLM's CPU attention accepts and, optionally, modalities m1 (12-dim,
    mlp2x_gelu) and m2 (7-dim, mlp_relu_ln). `config_overrides` go to `tiny_config`."""
    model, processor = build_tiny_checkpoint(
        folder, vision=vision, text_overrides=ENGINE_TEXT_CONFIG, **config_overrides
    )
    if with_modalities:
        torch.manual_seed(3)
        add_modality(model, processor, "m1", input_dim=MODALITY_DIMS["m1"])
        add_modality(model, processor, "m2", input_dim=MODALITY_DIMS["m2"], projector_type="mlp_relu_ln")
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    return model.eval(), processor


def copy_with_vision_model_level(source: Path, target: Path) -> Path:
    """A copy of a checkpoint whose tower weights carry the `vision_model.` level, as transformers 4.x modules and
    the checkpoints made with them name them: `model.vision_tower.vision_model.embeddings...`."""
    shutil.copytree(source, target)
    weights = load_file(source / "model.safetensors")
    renamed = {re.sub(r"^model\.vision_tower\.", "model.vision_tower.vision_model.", k): v for k, v in weights.items()}
    save_file(renamed, target / "model.safetensors", metadata={"format": "pt"})
    return target


@dataclass
class Case:
    """One prompt: its text (one placeholder per item), its images and its modality items."""

    text: str
    images: list[Image.Image] = field(default_factory=list)
    embeddings: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def vllm_request(self) -> dict:
        """The prompt as `LLM.generate` takes it."""
        data = {name: items for name, items in self.embeddings.items() if items}
        if self.images:
            data["image"] = self.images
        return {"prompt": self.text, "multi_modal_data": data} if data else {"prompt": self.text}

    def transformers_tokens(self, model: LlavaQwen3ForConditionalGeneration, processor: LlavaQwen3Processor) -> list:
        """transformers' greedy tokens for the prompt alone."""
        embeddings = {name: items for name, items in self.embeddings.items() if items}
        inputs = processor(
            text=self.text, images=self.images or None, modality_embeds=embeddings or None, return_tensors="pt"
        )
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        return output[0, inputs["input_ids"].shape[1] :].tolist()


def chat(processor: LlavaQwen3Processor, text: str, items: list[dict]) -> str:
    """The chat template's rendering of one user turn holding `items` and then `text`."""
    content = [*items, {"type": "text", "text": text}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def vectors(seed: int, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator) for shape in shapes]


def cases(processor: LlavaQwen3Processor, seed: int = 0) -> dict[str, Case]:
    """One prompt of each kind: one image, two images, text only, embedding modalities (with an image)."""
    image, m1, m2 = {"type": "image"}, {"type": "embedding", "modality": "m1"}, {"type": "embedding", "modality": "m2"}
    m1_dim, m2_dim = MODALITY_DIMS["m1"], MODALITY_DIMS["m2"]
    return {
        "one_image": Case(chat(processor, "What is in the picture?", [image]), [draw_image(seed)]),
        "two_images": Case(
            chat(processor, "Which one is red?", [image, image]), [draw_image(seed + 1), draw_image(seed + 2)]
        ),
        "text_only": Case(chat(processor, f"Describe {seed + 1} green squares.", [])),
        "modalities": Case(
            chat(processor, "What do these show?", [m1, image, m2, m1]),
            [draw_image(seed + 3)],
            {"m1": vectors(seed, (m1_dim,), (4, m1_dim)), "m2": vectors(seed + 1, (3, m2_dim))},
        ),
    }
