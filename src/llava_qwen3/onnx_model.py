"""Generate from an ONNX export with onnxruntime alone: no torch at inference.

An export folder has the layout of transformers.js' image-text-to-text models (onnx-community):

    config.json, generation_config.json, processor and tokenizer files
    onnx/vision_encoder{suffix}.onnx        pixel_values -> image_features (tower and projector)
    onnx/embed_tokens{suffix}.onnx          input_ids -> inputs_embeds
    onnx/decoder_model_merged{suffix}.onnx  inputs_embeds, attention_mask, position_ids, past_key_values.{i}.key/value
                                            -> logits, present.{i}.key/value (an empty past is the prefill step)

where the suffix names the variant ("" for fp32, "_quantized" for INT8, "_q4" for 4-bit), weights past protobuf's
2 GB limit lie beside their graph in `<file>.onnx_data`, and `onnx/quantization.json` records how each variant was
made. `LlavaQwen3OnnxModel.generate` mirrors `model.generate` of transformers on the processor's numpy outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from .processing import LlavaQwen3Processor

GRAPHS = ("vision_encoder", "embed_tokens", "decoder_model_merged")
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


def graph_path(folder: str | Path, graph: str, variant: str) -> Path:
    """Where `graph` of `variant` lies in an export folder."""
    if variant not in VARIANT_SUFFIXES:
        raise ValueError(f"variant {variant!r} is unknown; expected one of {', '.join(VARIANT_SUFFIXES)}.")
    return Path(folder) / "onnx" / f"{graph}{VARIANT_SUFFIXES[variant]}.onnx"


def external_data_path(graph: Path) -> Path:
    """Where a graph's weights lie when they are kept outside it: `<file>.onnx_data`, as transformers.js expects."""
    return graph.with_name(f"{graph.name}_data")


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
    variants = variant if isinstance(variant, dict) else dict.fromkeys(GRAPHS, variant)
    paths = {graph: graph_path(folder, graph, variants.get(graph, "fp32")) for graph in GRAPHS}
    missing = [path for path in paths.values() if not path.is_file()]
    if missing:
        raise ValueError(
            f"{folder} lacks onnx/{', onnx/'.join(path.name for path in missing)}, so it has no {variant!r} variant; "
            f"it has: {', '.join(available_variants(folder)) or 'none'}. Add variants with "
            "`llava-qwen3-export-onnx --quantize`."
        )
    return paths


class LlavaQwen3OnnxModel:
    """LLaVA-Qwen3 on onnxruntime: the exported graphs, the config and generation config, and the processor.

    `variant` picks the graphs ("fp32", "quantized", "q4", ...); a dict maps each graph name to its own variant.
    """

    def __init__(
        self,
        folder: str | Path,
        variant: str | dict[str, str] = "fp32",
        providers: list[str] | None = None,
        session_options: onnxruntime.SessionOptions | None = None,
    ) -> None:
        self.folder = Path(folder)
        paths = check_export_folder(self.folder, variant)
        self.config = json.loads((self.folder / "config.json").read_text())
        generation_path = self.folder / "generation_config.json"
        self.generation_config = json.loads(generation_path.read_text()) if generation_path.is_file() else {}
        self.processor = LlavaQwen3Processor.from_pretrained(self.folder)
        providers = providers or ["CPUExecutionProvider"]
        self.sessions = {
            graph: onnxruntime.InferenceSession(path, session_options, providers=providers)
            for graph, path in paths.items()
        }
        text = self.config["text_config"]
        self.num_layers = text["num_hidden_layers"]
        head_dim = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
        self.empty_cache_shape = (text["num_key_value_heads"], 0, head_dim)  # per batch row
        self.image_token_id = self.config["image_token_id"]

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs: Any) -> LlavaQwen3OnnxModel:
        """Loads an export folder; keyword arguments as for the constructor."""
        return cls(folder, **kwargs)

    def embed(self, input_ids: np.ndarray, pixel_values: np.ndarray | None = None) -> np.ndarray:
        """Input embeddings with each image's features written over its placeholder tokens."""
        embeds = self.sessions["embed_tokens"].run(None, {"input_ids": input_ids})[0]
        placeholders = input_ids == self.image_token_id
        if pixel_values is None:
            if placeholders.any():
                raise ValueError("input_ids hold image placeholders but no pixel_values were given.")
            return embeds
        features = self.sessions["vision_encoder"].run(None, {"pixel_values": pixel_values.astype(np.float32)})[0]
        features = features.reshape(-1, features.shape[-1])
        if placeholders.sum() != len(features):
            raise ValueError(
                f"input_ids hold {int(placeholders.sum())} image placeholder tokens but the {len(pixel_values)} "
                f"images give {len(features)} features; prepare inputs with the processor."
            )
        embeds[placeholders] = features
        return embeds

    def forward(
        self, inputs_embeds: np.ndarray, attention_mask: np.ndarray, past: list[np.ndarray] | None = None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits of every input position and the cache to pass on; `past=None` is the prefill step."""
        batch, length = inputs_embeds.shape[:2]
        if past is None:
            past = [np.zeros((batch, *self.empty_cache_shape), np.float32)] * (2 * self.num_layers)
        # As transformers does: positions count the real tokens, so a left-padded row starts at 0.
        position_ids = np.cumsum(attention_mask, axis=-1) - 1
        position_ids[attention_mask == 0] = 1
        feed = {
            "inputs_embeds": inputs_embeds,
            "attention_mask": attention_mask,
            "position_ids": position_ids[:, -length:],
        }
        for layer in range(self.num_layers):
            feed[f"past_key_values.{layer}.key"] = past[2 * layer]
            feed[f"past_key_values.{layer}.value"] = past[2 * layer + 1]
        logits, *present = self.sessions["decoder_model_merged"].run(None, feed)
        return logits, present

    def generate(
        self,
        input_ids: Any,
        attention_mask: Any = None,
        pixel_values: Any = None,
        max_new_tokens: int | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        seed: int | None = None,
        streamer: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Prompt and new tokens, `(batch, prompt + new)`, like `model.generate`; unset arguments come from
        generation_config.json. `streamer` is any object with `put(token_ids)` and `end()` (transformers'
        `TextStreamer` and `TextIteratorStreamer` work); `seed` makes sampling repeatable."""
        unknown = set(kwargs) - {"token_type_ids"}
        if unknown:
            raise ValueError(
                f"generate() of the onnxruntime runner does not take {', '.join(sorted(unknown))}; it takes "
                "max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id, pad_token_id, seed, streamer."
            )
        settings = self._settings(max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id, pad_token_id)
        input_ids = np.atleast_2d(np.asarray(input_ids, dtype=np.int64))
        attention_mask = (
            np.ones_like(input_ids) if attention_mask is None else np.atleast_2d(np.asarray(attention_mask, np.int64))
        )
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask has shape {attention_mask.shape}; expected {input_ids.shape}.")
        rng = np.random.default_rng(seed)
        pixel_values = None if pixel_values is None else np.asarray(pixel_values)

        sequences = input_ids
        finished = np.zeros(len(input_ids), dtype=bool)
        if streamer is not None:
            streamer.put(input_ids)
        inputs_embeds, past = self.embed(input_ids, pixel_values), None
        for _ in range(settings["max_new_tokens"]):
            logits, past = self.forward(inputs_embeds, attention_mask, past)
            tokens = self._next_tokens(logits[:, -1].astype(np.float32), settings, rng)
            tokens = np.where(finished, settings["pad_token_id"], tokens)
            sequences = np.concatenate([sequences, tokens[:, None]], axis=1)
            if streamer is not None:
                streamer.put(tokens)
            finished |= np.isin(tokens, settings["eos_token_id"])
            if finished.all():
                break
            attention_mask = np.concatenate([attention_mask, np.ones_like(tokens[:, None])], axis=1)
            inputs_embeds = self.embed(tokens[:, None])
        if streamer is not None:
            streamer.end()
        return sequences

    def _settings(self, max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id, pad_token_id) -> dict:
        given = {
            "max_new_tokens": max_new_tokens,
            "do_sample": do_sample,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "eos_token_id": eos_token_id,
            "pad_token_id": pad_token_id,
        }
        defaults = {"max_new_tokens": 20, "do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0}
        settings = {
            key: value if value is not None else self.generation_config.get(key, defaults.get(key))
            for key, value in given.items()
        }
        eos = settings["eos_token_id"]
        settings["eos_token_id"] = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        if settings["pad_token_id"] is None:
            settings["pad_token_id"] = settings["eos_token_id"][0] if settings["eos_token_id"] else 0
        settings["suppress_tokens"] = list(self.generation_config.get("suppress_tokens") or [])
        if settings["do_sample"] and settings["temperature"] <= 0:
            raise ValueError(f"temperature must be positive when sampling; got {settings['temperature']}.")
        return settings

    @staticmethod
    def _next_tokens(logits: np.ndarray, settings: dict, rng: np.random.Generator) -> np.ndarray:
        """Greedy or sampled next tokens, with the logits processed in transformers' order."""
        logits[:, settings["suppress_tokens"]] = -np.inf
        if not settings["do_sample"]:
            return logits.argmax(axis=-1)
        logits = logits / settings["temperature"]
        if settings["top_k"] and settings["top_k"] < logits.shape[-1]:
            kth = np.partition(logits, -settings["top_k"], axis=-1)[:, -settings["top_k"], None]
            logits = np.where(logits < kth, -np.inf, logits)
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        if settings["top_p"] < 1.0:
            order = np.argsort(-probs, axis=-1)
            sorted_probs = np.take_along_axis(probs, order, axis=-1)
            # Keep the smallest set of most likely tokens whose mass reaches top_p (at least one token).
            drop_sorted = np.cumsum(sorted_probs, axis=-1) - sorted_probs >= settings["top_p"]
            drop = np.zeros_like(drop_sorted)
            np.put_along_axis(drop, order, drop_sorted, axis=-1)
            probs = np.where(drop, 0.0, probs)
            probs /= probs.sum(axis=-1, keepdims=True)
        draws = rng.random((len(probs), 1))
        return np.minimum((np.cumsum(probs, axis=-1) < draws).sum(axis=-1), probs.shape[-1] - 1)
