"""Export a checkpoint to ONNX in transformers.js' image-text-to-text layout, optionally with quantised variants.

Three graphs, exported with `torch.onnx.export` (the torch.export-based exporter) in float32:
`vision_encoder` (tower and projector), `embed_tokens` and `decoder_model_merged` (Qwen3 and the LM head, one graph
for prefill and decoding: an empty past is the prefill step). `llava_qwen3.inference.onnx_layout` documents the layout
and `llava_qwen3.inference.onnx_runner` runs it. The config, generation config and processor files go beside them, so
the folder generates on its own. Where onnxruntime-genai's model builder runs (transformers 5), each variant also
gets the fused CPU decoder it builds (`fused_decoder`), which `LlavaQwen3OnnxModel` prefers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnx_ir
import torch
from torch import nn
from transformers import DynamicCache

from ..commands import exit_on_error
from ..inference.onnx_layout import (
    EMBED_TOKENS,
    GRAPHS,
    MERGED_DECODER,
    PAST,
    PRESENT,
    VISION_ENCODER,
    cache_names,
    external_data_path,
    graph_path,
    save_graph,
)
from ..modeling import CACHE_ARGUMENT, LlavaQwen3ForConditionalGeneration
from ..processing import LlavaQwen3Processor
from .build import load_source_config
from .fused_decoder import BUILDER_PRECISIONS, build_fused_decoders, builder_unavailable, check_builder
from .quantize_onnx import QUANTIZATIONS, quantize_export
from .writing import check_output_folder, print_folder, staged_folder

OPSET = 18


class VisionEncoder(nn.Module):
    """pixel_values `(num_images, 3, size, size)` -> image_features `(num_images, image_seq_length, hidden)`."""

    def __init__(self, model: LlavaQwen3ForConditionalGeneration) -> None:
        super().__init__()
        self.model = model.model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # The model's own method returns one tensor for all images, so the batch size stays symbolic.
        return self.model.project_images(pixel_values)


class TokenEmbedder(nn.Module):
    """input_ids -> inputs_embeds."""

    def __init__(self, model: LlavaQwen3ForConditionalGeneration) -> None:
        super().__init__()
        self.embed_tokens = model.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)


class MergedDecoder(nn.Module):
    """Qwen3 and the LM head on a cache passed in and out as flat tensors, `past_key_values.{i}.key/value`."""

    def __init__(self, model: LlavaQwen3ForConditionalGeneration) -> None:
        super().__init__()
        self.language_model = model.model.language_model
        self.lm_head = model.lm_head
        self.num_layers = model.config.text_config.num_hidden_layers

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: tuple[torch.Tensor, ...],
    ) -> tuple[torch.Tensor, ...]:
        cache = DynamicCache()
        for layer in range(self.num_layers):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{CACHE_ARGUMENT: cache},
        )
        present = [tensor for layer in cache.layers for tensor in (layer.keys, layer.values)]
        return (self.lm_head(outputs.last_hidden_state), *present)


def export_graphs(model: LlavaQwen3ForConditionalGeneration, folder: Path, external_data: bool = True) -> None:
    """Writes the three float32 graphs of `model` into `folder/onnx`."""
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    config = model.config
    text, vision = config.text_config, config.vision_config
    num_layers = text.num_hidden_layers
    head_dim = config.text_head_dim
    # Example inputs: a batch of 2 with a past of 3 positions, so no dimension is traced at a size of 0 or 1.
    batch, length, past_length = 2, 3, 3
    pixel_values = torch.rand(batch, vision.num_channels, vision.image_size, vision.image_size)
    input_ids = torch.randint(0, text.vocab_size, (batch, length))
    past = tuple(torch.zeros(batch, text.num_key_value_heads, past_length, head_dim) for _ in range(2 * num_layers))
    decoder_inputs = (
        torch.zeros(batch, length, text.hidden_size),
        torch.ones(batch, past_length + length, dtype=torch.long),
        torch.arange(past_length, past_length + length).repeat(batch, 1),
        past,
    )
    exports = {
        VISION_ENCODER: (
            VisionEncoder(model),
            (pixel_values,),
            ["pixel_values"],
            ["image_features"],
            ({0: "num_images"},),
        ),
        EMBED_TOKENS: (
            TokenEmbedder(model),
            (input_ids,),
            ["input_ids"],
            ["inputs_embeds"],
            ({0: "batch_size", 1: "sequence_length"},),
        ),
        MERGED_DECODER: (
            MergedDecoder(model),
            decoder_inputs,
            ["inputs_embeds", "attention_mask", "position_ids", *cache_names(PAST, num_layers)],
            ["logits", *cache_names(PRESENT, num_layers)],
            (
                {0: "batch_size", 1: "sequence_length"},
                {0: "batch_size", 1: "total_sequence_length"},
                {0: "batch_size", 1: "sequence_length"},
                tuple({0: "batch_size", 2: "past_sequence_length"} for _ in past),
            ),
        ),
    }
    for graph in GRAPHS:
        module, args, input_names, output_names, dynamic_shapes = exports[graph]
        with torch.no_grad():
            program = torch.onnx.export(
                module.eval(),
                args,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
        save_graph(onnx_ir.to_proto(program.model), graph_path(folder, graph, "fp32"), external_data)


def write_side_files(model: LlavaQwen3ForConditionalGeneration, processor: LlavaQwen3Processor, folder: Path) -> None:
    """Config (with transformers.js' settings), generation config and processor files."""
    model.config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    processor.save_pretrained(folder)
    graphs = sorted((folder / "onnx").glob("*.onnx"))
    external = [graph.name for graph in graphs if external_data_path(graph).is_file()]
    if external:  # transformers.js fetches a graph's .onnx_data only where the config says it has one
        path = folder / "config.json"
        config = json.loads(path.read_text())
        config["transformers.js_config"] = {"use_external_data_format": dict.fromkeys(external, True)}
        path.write_text(json.dumps(config, indent=2) + "\n")


def export_onnx(
    checkpoint: str | Path | LlavaQwen3ForConditionalGeneration,
    output: str | Path,
    processor: LlavaQwen3Processor | None = None,
    quantize: tuple[str, ...] = ("quantized",),
    external_data: bool = True,
    fused_decoder: bool | None = None,
) -> Path:
    """Exports a checkpoint (a folder, repo id or loaded model with its `processor`) to the folder `output`.

    `quantize` names the variants to add beside the float32 graphs (see `QUANTIZATIONS`). Each graph's weights go
    into a `<file>.onnx_data` file beside it (onnxruntime memory-maps them; see `onnx_layout`) unless `external_data`
    is False, which keeps them inside the graphs and fails for a graph past protobuf's 2 GB limit. `fused_decoder`
    adds the fused CPU decoder of each variant (True), leaves it out (False), or adds it where onnxruntime-genai's
    builder runs (None). The folder is written whole or not at all.
    """
    output = Path(output)
    check_output_folder(output)
    unknown = [name for name in quantize if name not in QUANTIZATIONS]
    if unknown:
        raise ValueError(f"--quantize {unknown[0]!r} is unknown; expected any of {', '.join(QUANTIZATIONS)}.")
    if fused_decoder is None:
        fused_decoder = builder_unavailable() is None
    elif fused_decoder:
        check_builder()  # before the long export, not after it
    if isinstance(checkpoint, LlavaQwen3ForConditionalGeneration):
        if processor is None:
            raise ValueError("pass the processor with a loaded model.")
        model = checkpoint
    else:
        # Checked first: from_pretrained would build the default-sized model of any other config.
        load_source_config(str(checkpoint), "checkpoint", expected_model_type="llava_qwen3")
        model = LlavaQwen3ForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32)
        processor = LlavaQwen3Processor.from_pretrained(checkpoint)
    model = model.float().eval()
    with staged_folder(output) as staging:
        export_graphs(model, staging, external_data)
        for variant in quantize:
            quantize_export(staging, variant, external_data)
        if fused_decoder:
            variants = tuple(variant for variant in ("fp32", *quantize) if variant in BUILDER_PRECISIONS)
            build_fused_decoders(model, staging, variants, external_data)
        write_side_files(model, processor, staging)
    return output


def main(argv: list[str] | None = None) -> None:
    """Command line: export a checkpoint to ONNX (fp32 plus quantised variants) for onnxruntime and transformers.js."""
    parser = argparse.ArgumentParser(prog="llava-qwen3-export-onnx", description=__doc__)
    parser.add_argument("checkpoint", help="checkpoint folder or repo id")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument(
        "--quantize",
        nargs="*",
        default=["quantized"],
        help=f"variants to add beside fp32, any of {', '.join(QUANTIZATIONS)} (default: quantized); `none` for fp32 "
        "only",
    )
    parser.add_argument(
        "--external-data",
        choices=["always", "never"],
        default="always",
        help="weights in <file>.onnx_data files beside each graph, which onnxruntime memory-maps (always, the "
        "default), or inside the graphs (never; only for graphs under protobuf's 2 GB limit)",
    )
    parser.add_argument(
        "--fused-decoder",
        choices=["auto", "always", "never"],
        default="auto",
        help="add the fused CPU decoder of each variant, built by onnxruntime-genai (faster on onnxruntime; needs "
        "transformers 5): where the builder runs (auto), always, or never",
    )
    args = parser.parse_args(argv)
    external_data = args.external_data == "always"
    fused_decoder = {"auto": None, "always": True, "never": False}[args.fused_decoder]
    if "none" in args.quantize and len(args.quantize) > 1:
        parser.error("--quantize none means fp32 only; it cannot be combined with variants.")
    quantize = tuple(name for name in args.quantize if name != "none")
    with exit_on_error(parser):
        export_onnx(
            args.checkpoint, args.output, quantize=quantize, external_data=external_data, fused_decoder=fused_decoder
        )
    print_folder(args.output)
    print_folder(args.output / "onnx")


if __name__ == "__main__":
    main()
