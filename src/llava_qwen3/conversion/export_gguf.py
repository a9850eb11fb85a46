"""GGUF export: a checkpoint as the two files llama.cpp's multimodal library loads (llama-mtmd-cli, llama-server,
llama-cpp-python, Ollama, LM Studio).

- The language model as llama.cpp's `qwen3` architecture, with the tokenizer (byte-level BPE, Qwen2's
  pre-tokenizer), its special tokens and the chat template.
- An `mmproj` file for llama.cpp's `clip` loader: the vision tower up to the deepest selected feature layer and the
  projector, as its `mlp` projector type (the LLaVA-1.5 graph: Linear, GELU, Linear).

The weights are read from the checkpoint's safetensors files (no model is built) and written with the `gguf` package,
llama.cpp's own writer; Q4_K_M is made by llama.cpp's `llama-quantize` from an f32 file. Embedding modalities have no
GGUF form: the export holds images and text only, and says so.

    llava-qwen3-export-gguf CHECKPOINT OUTPUT_DIR [--outtype f32|f16|q8_0|q4_k_m] [--llama-cpp BIN_DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors import safe_open

from ..commands import exit_on_error
from ..modeling import LlavaQwen3Config
from ..processing import LlavaQwen3Processor
from .llama_cpp import find_executable, quantize
from .writing import check_output_folder, missing_checkpoint_files, print_folder, staged_folder

# Output types written by this package's own code, and the one made by llama.cpp's quantizer from an f32 file.
OUTTYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}
LLAMA_QUANTIZE_TYPES = {"q4_k_m": "Q4_K_M"}
# llama.cpp's activation for each tower `hidden_act` whose function it computes (clip.cpp picks it from these keys).
TOWER_ACTIVATION_KEYS = {"quick_gelu": {}, "gelu_pytorch_tanh": {"use_gelu": True}}
# The prefixes of the checkpoint's weights and the names gguf's tensor maps know for the same modules.
LANGUAGE_MODEL_PREFIXES = {"model.language_model.": "model.", "lm_head.": "lm_head."}
VISION_TOWER_PREFIX = ("model.vision_tower.", "vision_tower.vision_model.")
PROJECTOR_PREFIX = "model.multi_modal_projector."
# clip.cpp's key of the selected hidden states (the `gguf` release on PyPI has no writer method or constant for it yet).
FEATURE_LAYERS_KEY = "clip.vision.feature_layer"
# clip.cpp's name of the LLaVA-1.5 projector (gguf's VisionProjectorType lists only the newer types).
LLAMA_CPP_PROJECTOR_TYPE = "mlp"
PROJECTOR_NAMES = {"linear_1": "mm.0", "linear_2": "mm.2"}  # llama.cpp's `mlp` projector: mm.0, GELU, mm.2
# How every llama.cpp picture marker ends: `<__media__>` (llama-mtmd-cli), `<__media_RANDOM__>` (llama-server).
MEDIA_MARKER_END = "__>"
LLAMA_CPP_CLS_ISSUE = "https://github.com/ggml-org/llama.cpp/issues/25814"


@dataclass(frozen=True)
class GgufExport:
    """The files of one export."""

    folder: Path
    language_model: Path
    projector: Path
    modelfile: Path
    notes: tuple[str, ...]


def export_notes(config: LlavaQwen3Config) -> tuple[str, ...]:
    """What llama.cpp cannot run of this model, as a ValueError, and what the user should know of what it can (the
    notes returned)."""
    vision = config.vision_config
    if config.projector_type != "mlp2x_gelu":
        raise ValueError(
            f"projector_type {config.projector_type!r} has no llama.cpp form: llama.cpp's LLaVA projectors are 'mlp' "
            "(Linear, GELU, Linear: this package's 'mlp2x_gelu') and 'mlp_norm' (Linear, LayerNorm, GELU, Linear, "
            "LayerNorm), not Linear, ReLU, LayerNorm, Linear. Only mlp2x_gelu checkpoints can be exported to GGUF."
        )
    if vision.hidden_act not in TOWER_ACTIVATION_KEYS:
        raise ValueError(
            f"the vision tower's hidden_act {vision.hidden_act!r} has no llama.cpp form for this graph; expected one "
            f"of {', '.join(TOWER_ACTIVATION_KEYS)}."
        )
    if config.vision_has_cls_token and config.vision_feature_select_strategy == "full":
        raise ValueError(
            "vision_feature_select_strategy 'full' keeps CLIP's class token as an image token; llama.cpp's LLaVA "
            "graph always drops it. Only 'default' CLIP checkpoints (or SigLIP ones) can be exported to GGUF."
        )
    rope_type = rope_parameters(config.text_config).get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(f"the language model's rope_type {rope_type!r} is not exported; only 'default' is.")
    notes = []
    if config.modalities:
        notes.append(
            f"the embedding modalities ({', '.join(config.modalities)}) have no GGUF form: the export holds images "
            "and text only."
        )
    if config.vision_has_cls_token:
        notes.append(
            "CLIP tower: llama.cpp's LLaVA graph puts CLIP's class token last while its inputs expect it first "
            f"({LLAMA_CPP_CLS_ISSUE}), so a stock llama.cpp (Ollama, LM Studio) shifts each image feature by one "
            "position and answers differ from PyTorch's; scripts/build_llama_cpp.sh builds llama.cpp with the "
            "one-line fix. SigLIP towers are unaffected. See docs/gguf.md."
        )
    return tuple(notes)


def rope_parameters(text_config: object) -> dict:
    """The language model's rope settings on either transformers line (5 nests them in `rope_parameters`)."""
    parameters = getattr(text_config, "rope_parameters", None)
    if parameters:
        return dict(parameters)
    return {"rope_theta": text_config.rope_theta, **(getattr(text_config, "rope_scaling", None) or {})}


def checkpoint_tensors(folder: Path, prefixes: tuple[str, ...]) -> Iterator[tuple[str, torch.Tensor]]:
    """The checkpoint's weights whose names start with one of `prefixes`, by name, read one at a time from its
    safetensors files (the others are never read)."""
    index = folder / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    )
    for name in files:
        with safe_open(folder / name, framework="pt") as weights:
            for key in weights.keys():
                if key.startswith(prefixes):
                    yield key, weights.get_tensor(key)


def tensor_type(array: np.ndarray, file_type: gguf.LlamaFileType) -> gguf.GGMLQuantizationType:
    """The GGML type of one weight: vectors (norms, biases) stay f32, as llama.cpp's converter keeps them; a matrix
    whose rows cannot be cut into Q8_0 blocks stays f16."""
    if array.ndim < 2 or file_type == gguf.LlamaFileType.ALL_F32:
        return gguf.GGMLQuantizationType.F32
    block_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]
    if file_type == gguf.LlamaFileType.MOSTLY_Q8_0 and array.shape[-1] % block_size == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16


def add_weight(writer: gguf.GGUFWriter, name: str, tensor: torch.Tensor, file_type: gguf.LlamaFileType) -> None:
    array = tensor.to(torch.float32).numpy()
    qtype = tensor_type(array, file_type)
    writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)


def llama_cpp_chat_template(template: str) -> str:
    """The checkpoint's chat template as llama.cpp renders it: without transformers' `{% generation %}` marks (a
    training-only extension llama.cpp's Jinja does not know), and with each of llama.cpp's picture markers followed by
    exactly one newline, as the processor writes an image item (`<image>` and a newline).

    llama.cpp hands the template a message with pictures as one string, the marker where each picture goes:
    `<__media__>` (llama-mtmd-cli) or `<__media_RANDOM__>` (llama-server), both ending in `__>`."""
    user_text = "{%- else -%}{%- if message['content'] is string -%}{{- message['content'] -}}"
    if user_text not in template:
        raise ValueError(
            "the checkpoint's chat template is not the package's ChatML template, so where llama.cpp's picture "
            "markers go cannot be derived; restore chat_template.jinja from the package (LlavaQwen3Processor)."
        )
    user_text_with_markers = (
        "{%- else -%}{%- if message['content'] is string -%}"
        f"{{{{- message['content'] | replace('{MEDIA_MARKER_END}\\n', '{MEDIA_MARKER_END}') "
        f"| replace('{MEDIA_MARKER_END}', '{MEDIA_MARKER_END}\\n') -}}}}"
    )
    template = template.replace(user_text, user_text_with_markers, 1)
    return re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", template)


def add_tokenizer(writer: gguf.GGUFWriter, checkpoint: Path, vocab_size: int, chat_template: str) -> None:
    """The checkpoint's byte-level BPE tokenizer as llama.cpp's `gpt2` model with Qwen2's pre-tokenizer: every id's
    token (rows of the embedding past the tokenizer padded as unused, as llama.cpp's converter does), its type
    (special tokens control, other added ones user-defined), the merges, the special ids and the chat template."""
    tokenizer = json.loads((checkpoint / "tokenizer.json").read_text(encoding="utf-8"))
    if tokenizer["model"]["type"] != "BPE":
        raise ValueError(f"the tokenizer is a {tokenizer['model']['type']} model; the GGUF export writes BPE ones.")
    by_id = {token_id: token for token, token_id in tokenizer["model"]["vocab"].items()}
    types = dict.fromkeys(by_id, gguf.TokenType.NORMAL)
    for added in tokenizer["added_tokens"]:
        by_id[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
    if max(by_id) >= vocab_size:
        raise ValueError(f"the tokenizer has ids up to {max(by_id)}, past the model's vocab_size {vocab_size}.")
    tokens = [by_id.get(token_id, f"[PAD{token_id}]") for token_id in range(vocab_size)]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([types.get(token_id, gguf.TokenType.UNUSED) for token_id in range(vocab_size)])
    special_vocab = gguf.SpecialVocab(checkpoint, load_merges=True, n_vocab=vocab_size)
    special_vocab.add_special_token["bos"] = False  # Qwen prompts start without one
    special_vocab.chat_template = chat_template
    special_vocab.add_to_gguf(writer, quiet=True)


def write_language_model(
    path: Path, checkpoint: Path, config: LlavaQwen3Config, chat_template: str, file_type: gguf.LlamaFileType
) -> None:
    """The Qwen3 language model of `checkpoint` as llama.cpp's `qwen3` architecture."""
    text = config.text_config
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN3], use_temp_file=True)
    writer.add_name(checkpoint.name)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(text.max_position_embeddings)
    writer.add_embedding_length(text.hidden_size)
    writer.add_block_count(text.num_hidden_layers)
    writer.add_feed_forward_length(text.intermediate_size)
    writer.add_head_count(text.num_attention_heads)
    writer.add_head_count_kv(text.num_key_value_heads)
    writer.add_key_length(config.text_head_dim)
    writer.add_value_length(config.text_head_dim)
    writer.add_rope_freq_base(rope_parameters(text)["rope_theta"])
    writer.add_layer_norm_rms_eps(text.rms_norm_eps)
    add_tokenizer(writer, checkpoint, text.vocab_size, chat_template)
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.QWEN3, text.num_hidden_layers)
    for key, tensor in checkpoint_tensors(checkpoint, tuple(LANGUAGE_MODEL_PREFIXES)):
        prefix = next(prefix for prefix in LANGUAGE_MODEL_PREFIXES if key.startswith(prefix))
        hf_name = LANGUAGE_MODEL_PREFIXES[prefix] + key.removeprefix(prefix)
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"the language model's weight {key} has no name in llama.cpp's qwen3 architecture.")
        if name == "output.weight" and config.tie_word_embeddings:
            continue  # tied: llama.cpp reads the token embeddings as the output head when this tensor is absent
        add_weight(writer, name, tensor, file_type)
    write_and_close(writer)


def projector_input_weight(weight: torch.Tensor, config: LlavaQwen3Config) -> torch.Tensor:
    """The projector's first weight with its input columns for the feature layers in llama.cpp's order: the model
    concatenates the layers as the config lists them, llama.cpp in ascending order and each once, so each layer's
    block of columns moves to its place (a layer listed twice gets the sum of its blocks: the same product)."""
    listed = config.feature_layer_indices()
    ascending = sorted(set(listed))
    width = config.vision_config.hidden_size
    reordered = weight.new_zeros(weight.shape[0], width * len(ascending))
    for position, index in enumerate(listed):
        target = ascending.index(index)
        reordered[:, target * width : (target + 1) * width] += weight[:, position * width : (position + 1) * width]
    return reordered


def write_projector(
    path: Path,
    checkpoint: Path,
    config: LlavaQwen3Config,
    processor: LlavaQwen3Processor,
    file_type: gguf.LlamaFileType,
) -> None:
    """The vision tower (its layers up to the deepest selected one; not its final norm or head, which the model never
    reads) and the projector as an mmproj file of llama.cpp's `clip` loader with the `mlp` projector."""
    vision = config.vision_config
    layers = sorted(set(config.feature_layer_indices()))  # as llama.cpp stacks them: each once, ascending
    num_blocks = max(max(layers), 1)  # layers past the deepest selected one are never run
    writer = gguf.GGUFWriter(path, "clip", use_temp_file=True)
    writer.add_name(checkpoint.name)
    writer.add_file_type(file_type)
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type(LLAMA_CPP_PROJECTOR_TYPE)
    writer.add_vision_image_size(vision.image_size)
    writer.add_vision_patch_size(vision.patch_size)
    writer.add_vision_embedding_length(vision.hidden_size)
    writer.add_vision_feed_forward_length(vision.intermediate_size)
    writer.add_vision_block_count(num_blocks)
    writer.add_vision_head_count(vision.num_attention_heads)
    writer.add_vision_attention_layernorm_eps(vision.layer_norm_eps)
    writer.add_vision_projection_dim(config.text_config.hidden_size)
    writer.add_vision_image_mean(list(processor.image_processor.image_mean))
    writer.add_vision_image_std(list(processor.image_processor.image_std))
    writer.add_array(FEATURE_LAYERS_KEY, layers)
    if TOWER_ACTIVATION_KEYS[vision.hidden_act].get("use_gelu"):
        writer.add_vision_use_gelu(True)
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.MMPROJ, vision.num_hidden_layers)
    tower_prefix, hf_prefix = VISION_TOWER_PREFIX
    for key, tensor in checkpoint_tensors(checkpoint, (tower_prefix, PROJECTOR_PREFIX)):
        if key.startswith(tower_prefix):
            name = names.get_name(hf_prefix + key.removeprefix(tower_prefix), try_suffixes=(".weight", ".bias"))
            block = re.match(r"v\.blk\.(\d+)\.", name or "")
            if name is None or name.startswith("v.post_ln") or (block and int(block.group(1)) >= num_blocks):
                continue  # the final norm, SigLIP's pooling head and layers past the deepest selected one
            add_weight(writer, name, tensor, file_type)
        else:  # the projector
            module, kind = key.removeprefix(PROJECTOR_PREFIX).split(".")
            if module == "linear_1" and kind == "weight":
                tensor = projector_input_weight(tensor, config)
            add_weight(writer, f"{PROJECTOR_NAMES[module]}.{kind}", tensor, file_type)
    if not config.multimodal_projector_bias:  # llama.cpp's graph always adds the biases
        for name in PROJECTOR_NAMES.values():
            add_weight(writer, f"{name}.bias", torch.zeros(config.text_config.hidden_size), file_type)
    write_and_close(writer)


def write_and_close(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def ollama_modelfile(language_model: str, projector: str) -> str:
    """An Ollama Modelfile for the two files: both FROM lines (Ollama takes the `clip` one as the projector), the
    ChatML turns of the chat template and its end-of-turn stop token, greedy decoding as the model card's examples."""
    return (
        f"FROM ./{language_model}\n"
        f"FROM ./{projector}\n"
        'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n'
        "{{ .Content }}<|im_end|>\n"
        '{{ end }}<|im_start|>assistant\n"""\n'
        "PARAMETER stop <|im_end|>\n"
        "PARAMETER temperature 0\n"
    )


def export_gguf(
    checkpoint: str | Path, output: str | Path, outtype: str = "f32", llama_cpp: str | Path | None = None
) -> GgufExport:
    """Writes the GGUF files of `checkpoint` into the new folder `output`: `<name>-<outtype>.gguf` (the language
    model), `mmproj-<name>-<f32|f16>.gguf` (tower and projector: f32 for an f32 export, else f16, as llama.cpp's
    own exports) and an Ollama `Modelfile`. The folder is written whole or not at all."""
    checkpoint, output = Path(checkpoint), Path(output)
    if outtype not in OUTTYPES and outtype not in LLAMA_QUANTIZE_TYPES:
        raise ValueError(
            f"--outtype {outtype!r} is unknown; expected one of {', '.join([*OUTTYPES, *LLAMA_QUANTIZE_TYPES])}."
        )
    if not checkpoint.is_dir():
        raise ValueError(f"checkpoint {checkpoint} is not a folder; download a Hub model first (`hf download REPO`).")
    missing = missing_checkpoint_files(checkpoint)
    if missing:
        raise ValueError(f"checkpoint {checkpoint} is incomplete: it has no {', '.join(missing)}.")
    check_output_folder(output)
    quantizer = find_executable("llama-quantize", llama_cpp) if outtype in LLAMA_QUANTIZE_TYPES else None
    config = LlavaQwen3Config.from_pretrained(checkpoint)
    notes = export_notes(config)
    processor = LlavaQwen3Processor.from_pretrained(checkpoint)
    chat_template = llama_cpp_chat_template(processor.chat_template)
    name = checkpoint.resolve().name
    projector_type = "f32" if outtype == "f32" else "f16"
    language_model, projector = f"{name}-{outtype}.gguf", f"mmproj-{name}-{projector_type}.gguf"
    with staged_folder(output) as staging:
        if quantizer is None:
            write_language_model(staging / language_model, checkpoint, config, chat_template, OUTTYPES[outtype])
        else:
            with tempfile.TemporaryDirectory(dir=staging) as scratch:
                f32 = Path(scratch) / "f32.gguf"
                write_language_model(f32, checkpoint, config, chat_template, OUTTYPES["f32"])
                quantize(quantizer, f32, staging / language_model, LLAMA_QUANTIZE_TYPES[outtype])
        write_projector(staging / projector, checkpoint, config, processor, OUTTYPES[projector_type])
        (staging / "Modelfile").write_text(ollama_modelfile(language_model, projector))
    return GgufExport(output, output / language_model, output / projector, output / "Modelfile", notes)


def main(argv: list[str] | None = None) -> None:
    """Runs the export from the command line."""
    parser = argparse.ArgumentParser(
        prog="llava-qwen3-export-gguf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint folder")
    parser.add_argument("output", type=Path, help="new folder for the GGUF files")
    parser.add_argument("--outtype", default="f32", choices=[*OUTTYPES, *LLAMA_QUANTIZE_TYPES])
    parser.add_argument(
        "--llama-cpp", type=Path, help="folder of llama.cpp's executables, for llama-quantize (q4_k_m); default: PATH"
    )
    args = parser.parse_args(argv)
    with exit_on_error(parser, (RuntimeError,)):
        export = export_gguf(args.checkpoint, args.output, args.outtype, args.llama_cpp)
    for note in export.notes:
        print(f"note: {note}")
    print_folder(export.folder)
    print(
        f"run: llama-mtmd-cli -m {export.language_model} --mmproj {export.projector} --image IMAGE -p QUESTION\n"
        f"     llama-server -m {export.language_model} --mmproj {export.projector}\n"
        f"     cd {export.folder} && ollama create NAME -f Modelfile"
    )
