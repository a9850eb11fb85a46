"""Import a transformers `LlavaForConditionalGeneration` checkpoint whose language model is Qwen3.

    llava-qwen3-import --source DIR_OR_ID --output DIR [--dtype D]

The parameter names are already the same (both models use transformers' Llava layout); what changes is the
configuration: Llava's projector activation and feature-selection choices map onto this model's options, and a
checkpoint whose choices this model cannot reproduce is refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers import AutoProcessor, LlavaForConditionalGeneration

from ..commands import exit_on_error
from ..modeling import LlavaQwen3Config, LlavaQwen3ForConditionalGeneration
from ..processing import LlavaQwen3Processor
from .build import finish_generation_config, load_source_config
from .writing import (
    DEFAULT_MAX_SHARD_SIZE,
    DTYPES,
    cast,
    check_dtype,
    check_output_folder,
    print_folder,
    write_checkpoint,
)


def config_from_llava(llava_config: object) -> LlavaQwen3Config:
    """This model's config for a Llava config, or a ValueError naming what has no equivalent."""
    if llava_config.model_type != "llava":
        raise ValueError(f"the source is a {llava_config.model_type!r} model; expected 'llava'.")
    if llava_config.text_config.model_type != "qwen3":
        raise ValueError(f"the source's language model is {llava_config.text_config.model_type!r}; expected 'qwen3'.")
    if llava_config.projector_hidden_act != "gelu":
        raise ValueError(
            f"the source's projector uses {llava_config.projector_hidden_act!r}; only 'gelu' (mlp2x_gelu) is supported."
        )
    has_cls = llava_config.vision_config.model_type == "clip_vision_model"
    strategy = llava_config.vision_feature_select_strategy
    if not has_cls and strategy == "default":
        raise ValueError(
            "the source drops the first SigLIP patch token (Llava's 'default' strategy on a tower without CLS); "
            "this model keeps every SigLIP token, so it cannot reproduce that checkpoint."
        )
    return LlavaQwen3Config(
        vision_config=llava_config.vision_config.to_dict(),
        text_config=llava_config.text_config.to_dict(),
        image_token_id=llava_config.image_token_id,
        projector_type="mlp2x_gelu",
        vision_feature_layer=llava_config.vision_feature_layer,
        vision_feature_select_strategy=strategy if has_cls else "default",
        multimodal_projector_bias=llava_config.multimodal_projector_bias,
        tie_word_embeddings=llava_config.tie_word_embeddings,
    )


def import_llava_checkpoint(
    source: str, output: str | Path, dtype: str = "float32", max_shard_size: str = DEFAULT_MAX_SHARD_SIZE
) -> Path:
    """Converts the Llava checkpoint at `source` into `output`; returns the folder."""
    output = Path(output)
    check_output_folder(output)
    torch_dtype = check_dtype(dtype)
    config = config_from_llava(load_source_config(source, "--source"))

    llava = LlavaForConditionalGeneration.from_pretrained(source)
    llava_processor = AutoProcessor.from_pretrained(source)
    model = LlavaQwen3ForConditionalGeneration(config).eval()
    model.load_state_dict(llava.state_dict(), strict=True)
    model.generation_config.update(**llava.generation_config.to_diff_dict())
    finish_generation_config(model.generation_config, llava_processor.tokenizer, config.image_token_id)
    llava_processor.tokenizer.padding_side = "left"  # batches for generation pad on the left
    processor = LlavaQwen3Processor(
        llava_processor.image_processor,
        llava_processor.tokenizer,
        chat_template=llava_processor.chat_template,  # the format the checkpoint was trained with, if it has one
        image_token=llava_processor.image_token,
        image_seq_length=config.image_seq_length,
    )
    cast(model, torch_dtype)
    return write_checkpoint(model, processor, output, max_shard_size)


def main(argv: list[str] | None = None) -> None:
    """Command line of import_llava_checkpoint."""
    parser = argparse.ArgumentParser(
        prog="llava-qwen3-import", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", required=True, help="LlavaForConditionalGeneration checkpoint, folder or id")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE)
    args = parser.parse_args(argv)
    with exit_on_error(parser):
        folder = import_llava_checkpoint(args.source, args.output, args.dtype, args.max_shard_size)
    print_folder(folder)


if __name__ == "__main__":
    main()
