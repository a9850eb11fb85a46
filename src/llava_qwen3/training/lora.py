"""Stage 2 with LoRA (peft): adapters on the language model's projections, projectors trained in full; and the
merge that turns the result back into a plain checkpoint."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model

from ..commands import exit_on_error
from ..conversion.writing import check_output_folder, print_folder, write_checkpoint
from ..modeling import MODEL_PARTS, LlavaQwen3ForConditionalGeneration
from ..processing import LlavaQwen3Processor
from .config import QWEN3_LINEAR_LAYERS, TrainConfig


def add_lora(
    model: LlavaQwen3ForConditionalGeneration,
    r: int = TrainConfig.lora_r,
    alpha: int = TrainConfig.lora_alpha,
    dropout: float = TrainConfig.lora_dropout,
    target_modules: tuple[str, ...] = QWEN3_LINEAR_LAYERS,
) -> PeftModel:
    """Wraps `model`: LoRA on `target_modules` of the language model only (never the tower's layers of the same
    names), and the image and modality projectors trained in full and saved with the adapter."""
    layers = "|".join(target_modules)
    language_model = MODEL_PARTS["language_model"][0]
    projectors = [
        MODEL_PARTS["projector"][0],
        *(f"{MODEL_PARTS['projector'][1]}.{name}" for name in model.config.modalities),
    ]
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=rf"{re.escape(language_model)}\..*\.({layers})",
        modules_to_save=projectors,
    )
    return get_peft_model(model, config)


def merge_lora(model: PeftModel) -> LlavaQwen3ForConditionalGeneration:
    """The plain model with the adapters folded into the weights."""
    return model.merge_and_unload()


def main(argv: list[str] | None = None) -> None:
    """Command line: merge a LoRA adapter into its base checkpoint and save a plain checkpoint."""
    parser = argparse.ArgumentParser(prog="llava-qwen3-merge-lora", description=__doc__)
    parser.add_argument("base", help="the checkpoint the adapter was trained on")
    parser.add_argument("adapter", help="the adapter folder (adapter_config.json, adapter_model.safetensors)")
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    with exit_on_error(parser):
        check_output_folder(args.output)
        if not (Path(args.adapter) / "adapter_config.json").is_file():
            raise ValueError(f"{args.adapter} holds no adapter_config.json; pass the folder the training saved.")
        base = LlavaQwen3ForConditionalGeneration.from_pretrained(args.base)
        processor = LlavaQwen3Processor.from_pretrained(args.base)
        merged = merge_lora(PeftModel.from_pretrained(base, args.adapter))
        print_folder(write_checkpoint(merged, processor, args.output))


if __name__ == "__main__":
    main()
