"""The layout of an ONNX export folder, the one home of its names: the exporter, the quantiser and the runner import it.

The folder has the layout of transformers.js' image-text-to-text models (onnx-community):

    config.json, generation_config.json, processor and tokenizer files
    onnx/vision_encoder{suffix}.onnx        pixel_values -> image_features (tower and projector)
    onnx/embed_tokens{suffix}.onnx          input_ids -> inputs_embeds
    onnx/decoder_model_merged{suffix}.onnx  inputs_embeds, attention_mask, position_ids, past_key_values.{i}.key/value
                                            -> logits, present.{i}.key/value (an empty past is the prefill step)
    onnx/quantization.json                  how each quantised variant was made

and, beside them, for onnxruntime on CPU (transformers.js does not read it):

    onnx/decoder_fused{suffix}.onnx         inputs_embeds, attention_mask, past_key_values.{i}.key/value
                                            -> logits of the last position, present.{i}.key/value
    onnx/decoder_fused.json                 how each was built

built by onnxruntime-genai's model builder from the same language model: fused operators (GroupQueryAttention with
rotary embedding inside, SkipSimplifiedLayerNormalization, one MatMul for q/k/v and one for gate/up, MatMulNBits
weights for the quantised variants) and a cache its caller preallocates, passed as both past and present so no step
copies it. Its attention mask only counts each row's tokens: a row's cache fills from position 0.

The suffix names the variant ("" for fp32, "_quantized" for INT8, "_q4" for 4-bit). Each graph's weights lie beside
it in `<file>.onnx_data` unless the export was asked to keep them inside: onnxruntime memory-maps external data, so a
weight it repacks at load (every `MatMulNBits`) leaves memory once repacked and an embedding table is resident only
where it is read, while weights inside the graph are read onto the heap and stay there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

VISION_ENCODER = "vision_encoder"
EMBED_TOKENS = "embed_tokens"
MERGED_DECODER = "decoder_model_merged"
GRAPHS = (VISION_ENCODER, EMBED_TOKENS, MERGED_DECODER)
# The file suffixes transformers.js looks for; its dtype "q8" loads the "_quantized" files.
VARIANT_SUFFIXES = {
    "fp32": "",
    "fp16": "_fp16",
    "quantized": "_quantized",
    "int8": "_int8",
    "uint8": "_uint8",
    "q4": "_q4",
}
QUANTIZATION_RECORD = "quantization.json"
FUSED_DECODER = "decoder_fused"  # optional, per variant
FUSED_DECODER_RECORD = "decoder_fused.json"
PAST, PRESENT = "past_key_values", "present"  # prefixes of the decoder's cache inputs and outputs
# Protobuf cannot serialise a message past 2 GiB; leave room for the graph itself.
PROTOBUF_WEIGHT_LIMIT = 1_800_000_000


def cache_names(prefix: str, num_layers: int) -> list[str]:
    """The decoder's cache inputs (`PAST`) or outputs (`PRESENT`), `{prefix}.{layer}.key/value`, in order."""
    return [f"{prefix}.{layer}.{kind}" for layer in range(num_layers) for kind in ("key", "value")]


def graph_path(folder: str | Path, graph: str, variant: str) -> Path:
    """Where `graph` of `variant` lies in an export folder."""
    if variant not in VARIANT_SUFFIXES:
        raise ValueError(f"variant {variant!r} is unknown; expected one of {', '.join(VARIANT_SUFFIXES)}.")
    return Path(folder) / "onnx" / f"{graph}{VARIANT_SUFFIXES[variant]}.onnx"


def external_data_path(graph: Path) -> Path:
    """Where a graph's weights lie when they are kept outside it: `<file>.onnx_data`, as transformers.js expects."""
    return graph.with_name(f"{graph.name}_data")


def variant_of(graph: str, variant: str | dict[str, str]) -> str:
    """The variant `graph` is loaded in: the one name, or the graph's own entry of a dict (fp32 where it has none)."""
    return variant.get(graph, "fp32") if isinstance(variant, dict) else variant


def has_fused_decoder(folder: str | Path, variant: str) -> bool:
    """Whether the export holds the fused CPU decoder of `variant`."""
    return graph_path(folder, FUSED_DECODER, variant).is_file()


def available_variants(folder: str | Path) -> list[str]:
    """The variants whose three graphs are all in `folder`."""
    return [name for name in VARIANT_SUFFIXES if all(graph_path(folder, graph, name).is_file() for graph in GRAPHS)]


def check_export_folder(folder: str | Path, variant: str | dict[str, str] = "fp32") -> dict[str, Path]:
    """The graph files of `variant` (one name, or one per graph), or a ValueError naming what is missing."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "onnx").is_dir():
        raise ValueError(
            f"{folder} is not an ONNX export of LLaVA-Qwen3: it needs config.json and an onnx/ folder with "
            f"{', '.join(graph + '.onnx' for graph in GRAPHS)}. Make one with `llava-qwen3-export-onnx`."
        )
    if isinstance(variant, dict):
        unknown = sorted(set(variant) - set(GRAPHS))
        if unknown:
            raise ValueError(f"variant names graph {unknown[0]!r}, which is not one of {', '.join(GRAPHS)}.")
        variants = {graph: variant_of(graph, variant) for graph in GRAPHS}
    elif isinstance(variant, str):
        variants = dict.fromkeys(GRAPHS, variant)
    else:
        raise TypeError(f"variant must be a variant name or a dict of them by graph, got {type(variant).__name__}.")
    paths = {graph: graph_path(folder, graph, name) for graph, name in variants.items()}
    missing = [path for path in paths.values() if not path.is_file()]
    if missing:
        raise ValueError(
            f"{folder} lacks onnx/{', onnx/'.join(path.name for path in missing)}, so it has no {variant!r} variant; "
            f"it has: {', '.join(available_variants(folder)) or 'none'}. Add variants with "
            "`llava-qwen3-export-onnx --quantize`."
        )
    return paths


def weight_bytes(model: Any) -> int:
    """Bytes of the weights stored inside an `onnx.ModelProto`."""
    return sum(len(tensor.raw_data) for tensor in model.graph.initializer)


def save_graph(model: Any, path: Path, external_data: bool = True) -> None:
    """Saves an `onnx.ModelProto` with its weights in `<file>.onnx_data` (`external_data`) or inside the graph, which
    protobuf allows up to `PROTOBUF_WEIGHT_LIMIT`."""
    import onnx  # the export side only: the runner needs onnxruntime, not onnx

    # Only counted where they stay inside: reading every initializer's bytes costs a copy of the weights.
    if not external_data and (inside := weight_bytes(model)) > PROTOBUF_WEIGHT_LIMIT:
        raise ValueError(
            f"{path.name} has {inside / 1e9:.2f} GB of weights, past the {PROTOBUF_WEIGHT_LIMIT / 1e9:.1f} GB "
            "a graph can hold inside its own file (protobuf's limit); export with its weights in external data files "
            "(--external-data always, the default)."
        )
    onnx.save_model(
        model,
        path,
        save_as_external_data=external_data,
        all_tensors_to_one_file=True,
        location=external_data_path(path).name,
        size_threshold=1024,
    )
