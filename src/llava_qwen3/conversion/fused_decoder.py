"""The fused CPU decoder of an ONNX export, built by onnxruntime-genai's model builder.

The builder turns a Qwen3 causal language model into onnxruntime's fused operators (GroupQueryAttention with the
rotary embedding inside and a cache shared between past and present, SkipSimplifiedLayerNormalization, q/k/v and
gate/up each one MatMul, MatMulNBits weights for 8 and 4 bits). It reads a transformers checkpoint folder, so the
language model and head are written as a `Qwen3ForCausalLM` folder first; the image features and embeddings stay in
the export's own graphs (`exclude_embeds`: the decoder takes inputs_embeds). `prune_lm_head` computes logits for the
last position only, as a decoder needs. The builder imports transformers' newest model classes, so it runs on
transformers 5 only; the graph it writes runs on onnxruntime alone.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import onnx
import transformers
from safetensors.torch import save_file

from ..inference.onnx_layout import FUSED_DECODER, FUSED_DECODER_RECORD, graph_path, save_graph
from ..modeling import LlavaQwen3ForConditionalGeneration

# The builder's precision for each variant of the export, and its options (8 and 4 bits: symmetric blocks of 32,
# int8 activations, as the export's q4 graphs use).
BUILDER_PRECISIONS = {"fp32": "fp32", "quantized": "int8", "q4": "int4"}
BUILDER_OPTIONS = {
    "exclude_embeds": "true",
    "prune_lm_head": "true",
    "accuracy_level": "4",
    "block_size": "32",
    "is_symmetric": "true",
}


def builder_unavailable() -> str | None:
    """Why onnxruntime-genai's model builder cannot run here, or None where it can."""
    if importlib.util.find_spec("onnxruntime_genai") is None:
        return "onnxruntime-genai is not installed (pip install 'llava-qwen3[onnx]')"
    if int(transformers.__version__.split(".")[0]) < 5:
        return f"onnxruntime-genai's model builder needs transformers 5, and this is {transformers.__version__}"
    return None


def check_builder() -> None:
    """A ValueError saying why the builder cannot run here, if it cannot."""
    reason = builder_unavailable()
    if reason:
        raise ValueError(f"the fused CPU decoder cannot be built: {reason}.")


def write_language_model(model: LlavaQwen3ForConditionalGeneration, folder: Path) -> None:
    """The language model and head as a `Qwen3ForCausalLM` checkpoint folder, the builder's input."""
    config = copy.deepcopy(model.config.text_config)
    config.architectures = ["Qwen3ForCausalLM"]
    head, embeddings = model.lm_head.weight, model.get_input_embeddings().weight
    config.tie_word_embeddings = head.data_ptr() == embeddings.data_ptr()
    config.save_pretrained(folder)
    weights = {f"model.{name}": tensor for name, tensor in model.model.language_model.state_dict().items()}
    if not config.tie_word_embeddings:
        weights["lm_head.weight"] = head
    save_file(
        {name: tensor.detach().float().contiguous() for name, tensor in weights.items()}, folder / "model.safetensors"
    )


def build_fused_decoders(
    model: LlavaQwen3ForConditionalGeneration,
    folder: Path,
    variants: tuple[str, ...],
    external_data: bool = True,
) -> list[Path]:
    """Writes the fused decoder of each of `variants` into the export `folder` and records how; returns their paths.
    The language model is written for the builder once, whatever the number of variants."""
    unknown = [variant for variant in variants if variant not in BUILDER_PRECISIONS]
    if unknown:
        raise ValueError(f"the fused decoder has no {unknown[0]!r} variant; it has {', '.join(BUILDER_PRECISIONS)}.")
    check_builder()
    record_path = folder / "onnx" / FUSED_DECODER_RECORD
    record: dict[str, Any] = json.loads(record_path.read_text()) if record_path.is_file() else {}
    targets = []
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        scratch = Path(scratch)
        write_language_model(model, scratch / "language_model")
        options = [f"{key}={value}" for key, value in BUILDER_OPTIONS.items()]
        # Offline: the builder reads the local folder only, and must never reach for the Hub instead.
        offline = {**os.environ, "HF_HUB_OFFLINE": "1"}
        for variant in variants:
            built = scratch / f"built-{variant}"
            command = [
                sys.executable, "-m", "onnxruntime_genai.models.builder",
                "--input", str(scratch / "language_model"), "--output", str(built),
                "--precision", BUILDER_PRECISIONS[variant], "--execution_provider", "cpu",
                "--cache_dir", str(scratch / "cache"), "--extra_options", *options,
            ]  # fmt: skip
            # Its own process: the builder loads the language model again, and its memory goes with the process.
            result = subprocess.run(command, capture_output=True, text=True, env=offline)
            if result.returncode != 0:
                raise RuntimeError(
                    f"onnxruntime-genai's model builder failed:\n{(result.stdout + result.stderr)[-3000:]}"
                )
            target = graph_path(folder, FUSED_DECODER, variant)
            save_graph(onnx.load(built / "model.onnx"), target, external_data)
            record[variant] = {
                "builder": f"onnxruntime_genai.models.builder {importlib.metadata.version('onnxruntime-genai')}",
                "precision": BUILDER_PRECISIONS[variant],
                "execution_provider": "cpu",
                "extra_options": BUILDER_OPTIONS,
                "file": target.name,
            }
            targets.append(target)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return targets
