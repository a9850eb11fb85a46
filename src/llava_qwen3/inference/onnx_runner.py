"""Generate from an ONNX export with onnxruntime alone: no torch at inference.

The export folder's layout is described in `onnx_layout`. `LlavaQwen3OnnxModel.generate` mirrors `model.generate`
of transformers on the processor's numpy outputs; it decodes on the fused CPU decoder where the export has one for the
variant, on transformers.js' merged decoder otherwise (`onnx_decoders`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from ..modeling import LlavaQwen3Config
from ..processing import LlavaQwen3Processor
from .onnx_decoders import FusedGraphDecoding, MergedGraphDecoding
from .onnx_layout import (
    EMBED_TOKENS,
    FUSED_DECODER,
    MERGED_DECODER,
    VISION_ENCODER,
    check_export_folder,
    graph_path,
    has_fused_decoder,
    variant_of,
)
from .sampling import (
    check_max_new_tokens,
    check_sampling,
    check_token_ids,
    context_overflow,
    next_tokens,
    stop_and_pad_ids,
)

# Hooks with transformers' signatures: a logits processor maps (input_ids, scores) to scores, a stopping criterion
# maps (input_ids, scores) to a bool per row.
LogitsProcessor = Callable[[np.ndarray, np.ndarray], np.ndarray]
StoppingCriterion = Callable[[np.ndarray, np.ndarray], np.ndarray]


def side_graph_options(graph: str, decoder_options: onnxruntime.SessionOptions | None) -> onnxruntime.SessionOptions:
    """The session options of the image or embedding graph beside a decoder that runs with `decoder_options`.

    onnxruntime's intra-op workers keep spinning for a while after a run, waiting for the next one. The decoder runs
    right after these graphs (after the image graph for a prompt, after the embedding graph at every token), so
    their spinning workers would hold the cores the decoder's own workers need: measured on a 2-core AMD EPYC, the
    first token 6-14% slower. Their workers therefore sleep as soon as a run ends, and the embedding graph, one
    lookup per token, runs on the calling thread alone.
    """
    options = onnxruntime.SessionOptions()
    if decoder_options is not None:
        options.intra_op_num_threads = decoder_options.intra_op_num_threads
        options.graph_optimization_level = decoder_options.graph_optimization_level
    if graph == EMBED_TOKENS:
        options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class LlavaQwen3OnnxModel:
    """LLaVA-Qwen3 on onnxruntime: the exported graphs, the config and generation config, and the processor.

    `variant` picks the graphs ("fp32", "quantized", "q4", ...); a dict maps each graph name to its own variant.
    `decoder` picks the decoder graph: "fused" (onnxruntime-genai's, where the export has it for the decoder's
    variant), "merged" (transformers.js'), or "auto" (fused where there is one). `session_options` are the decoder's;
    the image and embedding graphs take their thread count and optimisation level (`side_graph_options`).
    """

    def __init__(
        self,
        folder: str | Path,
        variant: str | dict[str, str] = "fp32",
        providers: list[str] | None = None,
        session_options: onnxruntime.SessionOptions | None = None,
        decoder: str = "auto",
    ) -> None:
        self.folder = Path(folder)
        paths = check_export_folder(self.folder, variant)
        self.variant = variant
        decoder_variant = variant_of(MERGED_DECODER, variant)
        self.decoder_graph = self._choose_decoder(decoder, decoder_variant)
        if self.decoder_graph == FUSED_DECODER:  # only the decoder that runs is loaded
            paths[MERGED_DECODER] = graph_path(self.folder, FUSED_DECODER, decoder_variant)
        self.config = LlavaQwen3Config.from_pretrained(self.folder)
        generation_path = self.folder / "generation_config.json"
        self.generation_config = json.loads(generation_path.read_text()) if generation_path.is_file() else {}
        self.processor = LlavaQwen3Processor.from_pretrained(self.folder)
        providers = providers or ["CPUExecutionProvider"]
        # The decoder's session first: onnxruntime repacks its weights as it loads them, and for a moment holds the
        # largest (the head) both as read and as repacked; before the other graphs are in memory, that moment does
        # not add to them (docs/performance.md).
        self.sessions = {
            graph: onnxruntime.InferenceSession(
                path,
                session_options if graph == MERGED_DECODER else side_graph_options(graph, session_options),
                providers=providers,
            )
            for graph, path in sorted(paths.items(), key=lambda item: item[0] != MERGED_DECODER)
        }
        self.decoder_session = self.sessions.pop(MERGED_DECODER)
        text = self.config.text_config
        self.num_layers = text.num_hidden_layers
        self.vocab_size = text.vocab_size
        self.max_positions = text.max_position_embeddings
        self.cache_row_shape = (text.num_key_value_heads, self.config.text_head_dim)  # per row and position
        self.image_token_id = self.config.image_token_id

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs: Any) -> LlavaQwen3OnnxModel:
        """Loads an export folder; keyword arguments as for the constructor."""
        return cls(folder, **kwargs)

    def embed(self, input_ids: np.ndarray, pixel_values: np.ndarray | None = None) -> np.ndarray:
        """Input embeddings with each image's features written over its placeholder tokens."""
        embeds = self.sessions[EMBED_TOKENS].run(None, {"input_ids": input_ids})[0]
        placeholders = input_ids == self.image_token_id
        if pixel_values is None:
            if placeholders.any():
                raise ValueError("input_ids hold image placeholders but no pixel_values were given.")
            return embeds
        features = self.sessions[VISION_ENCODER].run(None, {"pixel_values": pixel_values.astype(np.float32)})[0]
        features = features.reshape(-1, features.shape[-1])
        if placeholders.sum() != len(features):
            raise ValueError(
                f"input_ids hold {int(placeholders.sum())} image placeholder tokens but the {len(pixel_values)} "
                f"images give {len(features)} features; prepare inputs with the processor."
            )
        embeds[placeholders] = features
        return embeds

    def start_decoding(
        self, inputs_embeds: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int
    ) -> FusedGraphDecoding | MergedGraphDecoding:
        """Computes the prompt (left-padded `attention_mask`) of a generation of up to `max_new_tokens`; the result's
        `logits` are each row's next-token logits and its `advance(inputs_embeds)` computes one more position per
        row."""
        arguments = (self.decoder_session, self.num_layers, self.cache_row_shape, inputs_embeds, attention_mask)
        if self.decoder_graph == FUSED_DECODER:
            return FusedGraphDecoding(*arguments, max_new_tokens)
        return MergedGraphDecoding(*arguments)

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
        logits_processor: Sequence[LogitsProcessor] = (),
        stopping_criteria: Sequence[StoppingCriterion] = (),
        **kwargs: Any,
    ) -> np.ndarray:
        """Prompt and new tokens, `(batch, prompt + new)`, like `model.generate`; unset arguments come from
        generation_config.json and are checked as transformers checks them. `streamer` is any object with
        `put(token_ids)` and `end()` (transformers' `TextStreamer` and `TextIteratorStreamer` work); `seed` makes
        sampling repeatable. `logits_processor` and `stopping_criteria` take callables with transformers'
        signatures on numpy arrays: `(input_ids, scores) -> scores` and `(input_ids, scores) -> done per row`."""
        unknown = set(kwargs) - {"token_type_ids"}
        if unknown:
            raise ValueError(
                f"generate() of the onnxruntime runner does not take {', '.join(sorted(unknown))}; it takes "
                "max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id, pad_token_id, seed, streamer, "
                "logits_processor, stopping_criteria."
            )
        settings = self._settings(max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id, pad_token_id)
        input_ids, attention_mask = self._checked_prompt(input_ids, attention_mask, settings["max_new_tokens"])
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
        rng = np.random.default_rng(seed)
        pixel_values = None if pixel_values is None else self._checked_pixels(pixel_values)

        sequences = input_ids
        finished = np.zeros(len(input_ids), dtype=bool)
        if streamer is not None:
            streamer.put(input_ids)
        decoding = self.start_decoding(self.embed(input_ids, pixel_values), attention_mask, settings["max_new_tokens"])
        scores = decoding.logits
        for step in range(settings["max_new_tokens"]):
            scores[:, settings["suppress_tokens"]] = -np.inf
            for processor in logits_processor:
                scores = processor(sequences, scores)
            tokens = next_tokens(
                scores, settings["do_sample"], settings["temperature"], settings["top_k"], settings["top_p"], rng
            )
            tokens = np.where(finished, settings["pad_token_id"], tokens)
            sequences = np.concatenate([sequences, tokens[:, None]], axis=1)
            if streamer is not None:
                streamer.put(tokens)
            finished |= np.isin(tokens, settings["eos_token_id"])
            for criterion in stopping_criteria:
                finished |= np.asarray(criterion(sequences, scores), dtype=bool)
            if finished.all() or step == settings["max_new_tokens"] - 1:
                break
            scores = decoding.advance(self.embed(tokens[:, None]))
        if streamer is not None:
            streamer.end()
        return sequences

    def _choose_decoder(self, decoder: str, variant: str) -> str:
        if decoder not in ("auto", "fused", "merged"):
            raise ValueError(f"decoder must be 'auto', 'fused' or 'merged', got {decoder!r}.")
        fused = has_fused_decoder(self.folder, variant)
        if decoder == "fused" and not fused:
            raise ValueError(
                f"{self.folder} has no fused decoder for the {variant!r} variant "
                f"({graph_path(self.folder, FUSED_DECODER, variant).name}); export with `llava-qwen3-export-onnx "
                "--fused-decoder always` (transformers 5), or use decoder='merged'."
            )
        return FUSED_DECODER if decoder == "fused" or (decoder == "auto" and fused) else MERGED_DECODER

    def _checked_pixels(self, pixel_values: Any) -> np.ndarray:
        try:
            pixels = np.asarray(pixel_values, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise ValueError(f"pixel_values must be a float array of images; {error}") from error
        self.config.check_pixel_values_shape(pixels.shape)
        if len(pixels) == 0:
            raise ValueError("pixel_values hold no image; leave them out for a prompt without images.")
        if not np.isfinite(pixels).all():
            raise ValueError("pixel_values hold NaN or infinite values.")
        return pixels

    def _checked_prompt(self, input_ids: Any, attention_mask: Any, max_new_tokens: int) -> tuple[np.ndarray, ...]:
        """input_ids and attention_mask as int64 `(batch, length)` arrays, or a ValueError naming what is wrong."""
        try:
            input_ids = np.atleast_2d(np.asarray(input_ids))
        except (TypeError, ValueError, OverflowError) as error:  # ragged nested lists, or integers past int64
            raise ValueError(f"input_ids must be a (batch, length) array of token ids; {error}") from error
        if input_ids.ndim != 2 or input_ids.size == 0 or not np.issubdtype(input_ids.dtype, np.integer):
            raise ValueError(
                f"input_ids must be a non-empty (batch, length) array of token ids, got shape {input_ids.shape} "
                f"of {input_ids.dtype}; prepare inputs with the processor."
            )
        if input_ids.min() < 0 or input_ids.max() >= self.vocab_size:
            raise ValueError(f"input_ids hold ids outside the vocabulary [0, {self.vocab_size}).")
        input_ids = input_ids.astype(np.int64)
        if attention_mask is None:
            attention_mask = np.ones_like(input_ids)
        try:
            attention_mask = np.atleast_2d(np.asarray(attention_mask, dtype=np.int64))
        except (TypeError, ValueError, OverflowError) as error:  # ragged, or numbers past int64
            raise ValueError(f"attention_mask must be a (batch, length) array of 0 and 1; {error}") from error
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask has shape {attention_mask.shape}; expected {input_ids.shape}.")
        if not np.isin(attention_mask, (0, 1)).all() or not attention_mask[:, -1].all():
            raise ValueError("attention_mask must hold only 0 and 1, with 1 on the last position (left padding).")
        overflow = context_overflow(input_ids.shape[1], max_new_tokens, self.max_positions)
        if overflow:
            raise ValueError(overflow)
        return input_ids, attention_mask

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
        settings["max_new_tokens"] = check_max_new_tokens(settings["max_new_tokens"])
        if settings["do_sample"]:
            check_sampling(settings["temperature"], settings["top_k"], settings["top_p"])
        eos, pad = stop_and_pad_ids(settings["eos_token_id"], settings["pad_token_id"])
        settings["eos_token_id"] = check_token_ids("eos_token_id", eos, self.vocab_size)
        settings["pad_token_id"] = check_token_ids("pad_token_id", [pad], self.vocab_size)[0]
        settings["suppress_tokens"] = list(self.generation_config.get("suppress_tokens") or [])
        return settings
