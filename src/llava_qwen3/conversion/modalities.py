"""Add an embedding modality to a checkpoint: placeholder token, projector and config entry."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..commands import exit_on_error
from ..modeling import LlavaQwen3ForConditionalGeneration
from ..modeling.configuration_llava_qwen3 import PROJECTOR_TYPES
from ..processing import LlavaQwen3Processor
from .build import add_placeholder_token, load_source_config
from .writing import check_output_folder, print_folder, write_checkpoint


def add_modality(
    model: LlavaQwen3ForConditionalGeneration,
    processor: LlavaQwen3Processor,
    name: str,
    input_dim: int,
    projector_type: str = "mlp2x_gelu",
    token: str | None = None,
) -> int:
    """Gives `model` and `processor` a modality `name` of `input_dim`-sized vectors; returns its token id.

    The new projector starts untrained: train it (stage 1) before relying on it.
    """
    token = token or f"<{name}>"
    if name in model.config.modalities or name in processor.modality_tokens:
        raise ValueError(f"modality {name!r} exists already.")
    token_id = add_placeholder_token(processor.tokenizer, model, token)
    model.model.add_modality(name, input_dim, token_id, token=token, projector_type=projector_type)
    model.generation_config.suppress_tokens = sorted({*(model.generation_config.suppress_tokens or []), token_id})
    processor.modality_tokens = {**processor.modality_tokens, name: token}
    return token_id


def main(argv: list[str] | None = None) -> None:
    """Command line: add a modality to a checkpoint folder and write the result to a new folder."""
    parser = argparse.ArgumentParser(prog="llava-qwen3-add-modality", description=__doc__)
    parser.add_argument("checkpoint", help="checkpoint folder or repo id")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--name", required=True, help="modality name, e.g. m1")
    parser.add_argument("--input-dim", required=True, type=int)
    parser.add_argument("--projector-type", default=PROJECTOR_TYPES[0], choices=PROJECTOR_TYPES)
    parser.add_argument("--token", help="placeholder token; default <NAME>")
    args = parser.parse_args(argv)
    with exit_on_error(parser):
        check_output_folder(args.output)
        load_source_config(args.checkpoint, "checkpoint", expected_model_type="llava_qwen3")
        model = LlavaQwen3ForConditionalGeneration.from_pretrained(args.checkpoint)
        processor = LlavaQwen3Processor.from_pretrained(args.checkpoint)
        add_modality(model, processor, args.name, args.input_dim, args.projector_type, args.token)
        print_folder(write_checkpoint(model, processor, args.output))


if __name__ == "__main__":
    main()
