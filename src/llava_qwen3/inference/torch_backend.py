"""The PyTorch backend: on CPU the language model's own steps (see `qwen3_steps`), elsewhere the model's `generate()`,
with the per-request hooks (a logits processor and a stopping criterion for `generate()`), and optionally a prefix
cache (see `prefix_cache`) so that prompts that begin as earlier ones did start from those prompts' KV caches.

Each row's token is chosen where the logits are, with torch's ops and transformers' own logits warpers (temperature,
top-k, top-p) for the rows that sample: only the chosen token ids leave the device, never a step's logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    BatchFeature,
    DynamicCache,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ..modeling import CACHE_ARGUMENT, LlavaQwen3ForConditionalGeneration
from ..processing import LlavaQwen3Processor
from .backend import KV_CACHE_DTYPES, InferenceBackend
from .decoding import BatchDecoding
from .int8 import QUANTIZATIONS, quantize_linear_layers_int8
from .prefix_cache import Prefix, PrefixCache, RowPrompt, checked_budget, cut_at_or_before, row_prompts
from .qwen3_steps import Qwen3Steps, unsupported_reason
from .records import check_embedding_shapes, with_loaded_embeddings


class _ChooseForEachRequest(LogitsProcessor):
    """Leaves each row's token, chosen with its request's settings (greedy, or drawn with its own seeded generator
    after its warpers), as the only candidate of a greedy step."""

    def __init__(self, decoding: BatchDecoding, device: torch.device) -> None:
        self.decoding = decoding
        self.samplers = {}  # row -> (its warpers, its generator)
        for index, row in enumerate(decoding.rows):
            settings = row.settings
            if settings.do_sample:
                warpers = LogitsProcessorList([TemperatureLogitsWarper(settings.temperature)])
                if settings.top_k:
                    warpers.append(TopKLogitsWarper(settings.top_k))
                if settings.top_p < 1.0:
                    warpers.append(TopPLogitsWarper(settings.top_p))
                generator = torch.Generator(device)
                generator.manual_seed(settings.seed) if settings.seed is not None else generator.seed()
                self.samplers[index] = (warpers, generator)

    def tokens(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.LongTensor:
        """Each row's next token (the padding token for rows already done)."""
        tokens = scores.argmax(dim=-1)
        done = self.decoding.done
        for index, (warpers, generator) in self.samplers.items():
            if not done[index]:
                row_scores = warpers(input_ids[index : index + 1], scores[index : index + 1].float())
                probabilities = torch.softmax(row_scores, dim=-1)
                tokens[index] = torch.multinomial(probabilities, 1, generator=generator)[0, 0]
        if done.any():
            tokens[torch.from_numpy(done).to(tokens.device)] = self.decoding.pad_token_id
        return tokens

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        forced = torch.full_like(scores, -torch.inf)
        return forced.scatter_(1, self.tokens(input_ids, scores)[:, None], 0.0)


class _RequestsDone(StoppingCriteria):
    """Records each step's tokens and says which requests are done."""

    def __init__(self, decoding: BatchDecoding) -> None:
        self.decoding = decoding

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        done = self.decoding.advance(input_ids[:, -1].cpu().numpy())
        return torch.from_numpy(done).to(input_ids.device)


class TorchBackend(InferenceBackend):
    """`LlavaQwen3ForConditionalGeneration` and its processor; with `prefix_cache_bytes`, a prefix cache of that
    budget. On CPU the backend decodes through `Qwen3Steps`, which reads the model's weights in place and keeps the
    KV cache in `kv_cache_dtype` (one of `KV_CACHE_DTYPES`; default: the weights' dtype)."""

    name = "torch"
    tensor_type = "pt"

    def __init__(
        self,
        model: LlavaQwen3ForConditionalGeneration,
        processor: LlavaQwen3Processor,
        prefix_cache_bytes: int = 0,
        kv_cache_dtype: str | None = None,
    ) -> None:
        cache_dtype = _checked_kv_cache_dtype(kv_cache_dtype)
        super().__init__(processor, model.generation_config.to_dict(), model.config.text_config.max_position_embeddings)
        self.model = model.eval()
        # transformers' generate() where the steps do not apply (a GPU, another language model, sliding windows).
        self.steps = None
        reason = unsupported_reason(model.config.text_config, model.device)
        if reason is None:
            self.steps = Qwen3Steps(model.model.language_model, model.lm_head, cache_dtype=cache_dtype)
        elif cache_dtype is not None:
            raise ValueError(
                f"kv_cache_dtype is for the torch backend's CPU steps, which cannot run this model: {reason}; "
                "leave it unset to keep the cache in the weights' dtype."
            )
        self.prefix_cache = PrefixCache(prefix_cache_bytes) if prefix_cache_bytes else None

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        quantize: str | None = None,
        prefix_cache_bytes: int = 0,
        kv_cache_dtype: str | None = None,
        **kwargs: Any,
    ) -> TorchBackend:
        """Loads a checkpoint folder or repo id onto `device` (default: CUDA where present, else CPU) in `dtype`
        (default: as saved); `quantize="int8"` then gives every linear layer INT8 weights (CPU only, see `int8`).
        `prefix_cache_bytes` > 0 keeps the KV caches of earlier requests up to that many bytes for prompts that begin
        the same way (0: none). `kv_cache_dtype` (CPU only) keeps the KV cache in that dtype: "bfloat16" or "float16"
        halve an fp32 model's cache, at the cost of exactness (docs/inference.md)."""
        if quantize is not None and quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize={quantize!r} is unknown; expected one of {', '.join(QUANTIZATIONS)} or None.")
        checked_budget(prefix_cache_bytes)  # before the model is loaded
        _checked_kv_cache_dtype(kv_cache_dtype)
        device = device or ("cuda" if torch.cuda.is_available() and quantize is None else "cpu")
        model = LlavaQwen3ForConditionalGeneration.from_pretrained(checkpoint, dtype=dtype or "auto", **kwargs)
        model = model.to(device)
        if quantize == "int8":
            quantize_linear_layers_int8(model)
        return cls(model, LlavaQwen3Processor.from_pretrained(checkpoint), prefix_cache_bytes, kv_cache_dtype)

    @property
    def device(self) -> str:
        return str(self.model.device)

    def encode(self, record: dict[str, Any], processor: LlavaQwen3Processor | None = None) -> BatchFeature:
        record = with_loaded_embeddings(record)
        check_embedding_shapes(record, self.model.config.modalities)
        return (processor or self.processor).process_records(record, return_tensors=self.tensor_type)

    @torch.inference_mode()
    def _run_engine(
        self, inputs: BatchFeature, encoded: list[BatchFeature], decoding: BatchDecoding
    ) -> list[int] | None:
        model_inputs = dict(inputs.to(self.model.device))
        prefilled, reused = None, None
        if self.prefix_cache is not None:
            rows = row_prompts(encoded, self.processor)
            padded_length = model_inputs["input_ids"].shape[1]
            starts = [padded_length - len(row.key) for row in rows]  # left padding: where each row's prompt begins
            # Each row may reuse up to all but its last token: at least that one is computed.
            found = [self.prefix_cache.longest(row.key, len(row.key) - 1) for row in rows]
            column = _shared_column(rows, starts, found)
            reused = [min(length, max(column - start, 0)) for (_, length), start in zip(found, starts, strict=True)]
            if any(reused):
                prefilled = self._prefilled_batch(rows, starts, [prefix for prefix, _ in found], reused, column)
                pixel_values, modality_embeds = _inputs_after(rows, starts, column)
                model_inputs["pixel_values"] = None if pixel_values is None else pixel_values.to(self.model.device)
                model_inputs["modality_embeds"] = modality_embeds
        choose = _ChooseForEachRequest(decoding, self.model.device)
        run = self._generate if self.steps is None else self._generate_in_steps
        sequences, layers = run(model_inputs, prefilled, decoding, choose)
        if self.prefix_cache is not None:
            self._store(rows, sequences[:, padded_length:], layers, padded_length)
        return reused

    def _generate(
        self,
        model_inputs: dict[str, Any],
        prefilled: DynamicCache | None,
        decoding: BatchDecoding,
        choose: _ChooseForEachRequest,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The sequences (prompt and answer) and each layer's keys and values, through the model's `generate()`."""
        output = self.model.generate(
            **{name: value for name, value in model_inputs.items() if value is not None},
            max_new_tokens=decoding.max_new_tokens,
            do_sample=False,
            pad_token_id=self.pad_token_id,
            logits_processor=LogitsProcessorList([choose]),
            stopping_criteria=StoppingCriteriaList([_RequestsDone(decoding)]),
            return_dict_in_generate=True,
            **({} if prefilled is None else {CACHE_ARGUMENT: prefilled}),
        )
        return output.sequences, _layers(getattr(output, CACHE_ARGUMENT))

    def _generate_in_steps(
        self,
        model_inputs: dict[str, Any],
        prefilled: DynamicCache | None,
        decoding: BatchDecoding,
        choose: _ChooseForEachRequest,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The same as `_generate`, through `Qwen3Steps` (see qwen3_steps): the prompt after what `prefilled` holds in
        one pass, then a token a step."""
        input_ids, attention_mask = model_inputs["input_ids"], model_inputs["attention_mask"]
        # The last token is never fed back, so the cache needs room for all but one of the new tokens.
        cache = self.steps.new_cache(attention_mask, input_ids.shape[1] + decoding.max_new_tokens - 1)
        if prefilled is not None:
            self.steps.fill(cache, _layers(prefilled))
        inner = self.model.model
        embedding = inner.get_input_embeddings()
        new_ids = input_ids[:, cache.length :]
        embeds = embedding(new_ids)
        if model_inputs.get("pixel_values") is not None:
            images = inner.project_images(model_inputs["pixel_values"])
            embeds = inner.merge_image_features(new_ids, embeds, images)
        if model_inputs.get("modality_embeds"):
            embeds = inner.merge_modality_features(new_ids, embeds, model_inputs["modality_embeds"])
        # transformers' positions for a left-padded batch: each row counts from its first real token.
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        logits = self.steps.forward(embeds, positions[:, cache.length :], cache)
        sequences, position = input_ids, positions[:, -1:]
        for _ in range(decoding.max_new_tokens):
            tokens = choose.tokens(sequences, logits)
            sequences = torch.cat([sequences, tokens[:, None]], dim=-1)
            if decoding.advance(tokens.cpu().numpy()).all():
                break
            position = position + 1
            logits = self.steps.forward(embedding(tokens[:, None]), position, cache)
        return sequences, cache.layers()

    def _prefilled_batch(
        self,
        rows: list[RowPrompt],
        starts: list[int],
        prefixes: list[Prefix | None],
        reused: list[int],
        column: int,
    ) -> DynamicCache:
        """A left-padded batch cache `column` positions wide: each row's reused positions of its prefix, and where
        those end before `column`, the rest up to it computed for that row alone."""
        row_caches = []
        for row, start, prefix, length in zip(rows, starts, prefixes, reused, strict=True):
            cache = DynamicCache()
            if length:
                for layer, (keys, values) in enumerate(prefix.layers):
                    cache.update(keys[None, :, :length], values[None, :, :length], layer)
            end = column - start
            if end > length:
                images, modality_embeds = row.inputs_between(length, end)
                self.model(
                    input_ids=row.input_ids[None, length:end].to(self.model.device),
                    pixel_values=torch.stack(images).to(self.model.device) if images else None,
                    modality_embeds=modality_embeds or None,
                    position_ids=torch.arange(length, end, device=self.model.device)[None],
                    use_cache=True,
                    logits_to_keep=1,
                    **{CACHE_ARGUMENT: cache},
                )
            row_caches.append(cache)
        batch = DynamicCache()
        for layer in range(self.model.config.text_config.num_hidden_layers):
            filled = [_layer(cache, layer) for cache in row_caches]
            shape_source = next(keys for keys, _ in filled if keys is not None)
            heads, dim = shape_source.shape[1], shape_source.shape[3]
            keys = shape_source.new_zeros(len(rows), heads, column, dim)
            values = torch.zeros_like(keys)
            for index, (start, (row_keys, row_values)) in enumerate(zip(starts, filled, strict=True)):
                if row_keys is not None:
                    keys[index, :, start:] = row_keys[0]
                    values[index, :, start:] = row_values[0]
            batch.update(keys, values, layer)
        return batch

    def _store(
        self,
        rows: list[RowPrompt],
        generated: torch.Tensor,
        layers: list[tuple[torch.Tensor, torch.Tensor]],
        padded_length: int,
    ) -> None:
        """Keeps each row's prompt and answer as far as the cache holds them (the last token was never fed back)."""
        fed = generated.shape[1] - 1
        stops = set(self.stop_token_ids)
        for index, row in enumerate(rows):
            tokens = generated[index, :fed].tolist()
            own = next((position + 1 for position, token in enumerate(tokens) if token in stops), fed)
            start, end = padded_length - len(row.key), padded_length + own
            key = np.concatenate([row.key, np.asarray(tokens[:own], dtype=np.int64)])
            row_layers = [(keys[index, :, start:end], values[index, :, start:end]) for keys, values in layers]
            self.prefix_cache.put(key, row_layers)


def _checked_kv_cache_dtype(name: str | None) -> torch.dtype | None:
    """The torch dtype `kv_cache_dtype` names (None for the weights' own); a ValueError for another name."""
    if name is None:
        return None
    if name not in KV_CACHE_DTYPES:
        raise ValueError(f"kv_cache_dtype={name!r} is unknown; expected one of {', '.join(KV_CACHE_DTYPES)} or None.")
    return getattr(torch, name)


def _shared_column(rows: list[RowPrompt], starts: list[int], found: list[tuple[Prefix | None, int]]) -> int:
    """The batch column up to which the cache is filled before generate() computes the rest of every row in one pass:
    where the shortest reused prefix ends (so that a lone request, or a batch of next turns, needs no pass of its own;
    rows that reuse less are computed up to it one by one, rows that reuse more compute the difference with the batch),
    moved back until it splits no row inside a placeholder run. 0 when no row reuses anything."""
    ends = [start + length for start, (_, length) in zip(starts, found, strict=True) if length]
    column = min(ends, default=0)
    while True:
        cut = min(
            start + cut_at_or_before(row.key, column - start) if column > start else column
            for row, start in zip(rows, starts, strict=True)
        )
        if cut == column:
            return column
        column = cut


def _inputs_after(
    rows: list[RowPrompt], starts: list[int], column: int
) -> tuple[torch.Tensor | None, dict[str, list[torch.Tensor]] | None]:
    """The pixel values and modality embeddings, in batch order, whose placeholders begin at or after the batch
    column."""
    images, modality_embeds = [], {}
    for row, start in zip(rows, starts, strict=True):
        row_images, row_embeds = row.inputs_between(max(column - start, 0), len(row.key))
        images += row_images
        for name, items in row_embeds.items():
            modality_embeds.setdefault(name, []).extend(items)
    return (torch.stack(images) if images else None), (modality_embeds or None)


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's keys and values `(batch, heads, length, dim)`."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def _layer(cache: DynamicCache, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """A layer's keys and values `(1, heads, length, dim)`, or Nones where the cache holds no position yet."""
    if len(cache.layers) <= layer or cache.layers[layer].keys is None or cache.layers[layer].keys.numel() == 0:
        return None, None
    return cache.layers[layer].keys, cache.layers[layer].values
