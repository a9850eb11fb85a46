"""Add an embedding modality to a checkpoint: placeholder token, projector and config entry."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..modeling import LlavaQwen3ForConditionalGeneration
from ..processing import LlavaQwen3Processor
from .build import add_placeholder_token
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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", help="checkpoint folder or repo id")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--name", required=True, help="modality name, e.g. m1")
    parser.add_argument("--input-dim", required=True, type=int)
    parser.add_argument("--projector-type", default="mlp2x_gelu", choices=["mlp2x_gelu", "mlp_relu_ln"])
    parser.add_argument("--token", help="placeholder token; default <NAME>")
    args = parser.parse_args(argv)
    try:
        check_output_folder(args.output)
        model = LlavaQwen3ForConditionalGeneration.from_pretrained(args.checkpoint)
        processor = LlavaQwen3Processor.from_pretrained(args.checkpoint)
        add_modality(model, processor, args.name, args.input_dim, args.projector_type, args.token)
    except ValueError as error:
        parser.exit(2, f"llava-qwen3-add-modality: error: {error}\n")
    print_folder(write_checkpoint(model, processor, args.output, max_shard_size="5GB"))


if __name__ == "__main__":
    main()
