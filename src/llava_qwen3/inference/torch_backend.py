"""The PyTorch backend: the model's own `generate()`, with the per-request hooks as a logits processor and a stopping
criterion, and optionally a prefix cache (see `prefix_cache`) so that prompts that begin as earlier ones did start
from those prompts' KV caches.

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
from .backend import InferenceBackend
from .decoding import BatchDecoding
from .int8 import QUANTIZATIONS, quantize_linear_layers_int8
from .prefix_cache import Prefix, PrefixCache, RowPrompt, checked_budget, cut_at_or_before, row_prompts
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

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        tokens = scores.argmax(dim=-1)
        done = self.decoding.done
        for index, (warpers, generator) in self.samplers.items():
            if not done[index]:
                row_scores = warpers(input_ids[index : index + 1], scores[index : index + 1].float())
                probabilities = torch.softmax(row_scores, dim=-1)
                tokens[index] = torch.multinomial(probabilities, 1, generator=generator)[0, 0]
        if done.any():
            tokens[torch.from_numpy(done).to(tokens.device)] = self.decoding.pad_token_id
        forced = torch.full_like(scores, -torch.inf)
        return forced.scatter_(1, tokens[:, None], 0.0)


class _RequestsDone(StoppingCriteria):
    """Records each step's tokens and says which requests are done."""

    def __init__(self, decoding: BatchDecoding) -> None:
        self.decoding = decoding

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        done = self.decoding.advance(input_ids[:, -1].cpu().numpy())
        return torch.from_numpy(done).to(input_ids.device)


class TorchBackend(InferenceBackend):
    """`LlavaQwen3ForConditionalGeneration` and its processor; with `prefix_cache_bytes`, a prefix cache of that
    budget."""

    name = "torch"
    tensor_type = "pt"

    def __init__(
        self, model: LlavaQwen3ForConditionalGeneration, processor: LlavaQwen3Processor, prefix_cache_bytes: int = 0
    ) -> None:
        super().__init__(processor, model.generation_config.to_dict(), model.config.text_config.max_position_embeddings)
        self.model = model.eval()
        self.prefix_cache = PrefixCache(prefix_cache_bytes) if prefix_cache_bytes else None

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        quantize: str | None = None,
        prefix_cache_bytes: int = 0,
        **kwargs: Any,
    ) -> TorchBackend:
        """Loads a checkpoint folder or repo id onto `device` (default: CUDA where present, else CPU) in `dtype`
        (default: as saved); `quantize="int8"` then gives every linear layer INT8 weights (CPU only, see `int8`).
        `prefix_cache_bytes` > 0 keeps the KV caches of earlier requests up to that many bytes for prompts that begin
        the same way (0: none)."""
        if quantize is not None and quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize={quantize!r} is unknown; expected one of {', '.join(QUANTIZATIONS)} or None.")
        checked_budget(prefix_cache_bytes)  # before the model is loaded
        device = device or ("cuda" if torch.cuda.is_available() and quantize is None else "cpu")
        model = LlavaQwen3ForConditionalGeneration.from_pretrained(checkpoint, dtype=dtype or "auto", **kwargs)
        model = model.to(device)
        if quantize == "int8":
            quantize_linear_layers_int8(model)
        return cls(model, LlavaQwen3Processor.from_pretrained(checkpoint), prefix_cache_bytes)

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
        options = dict(
            max_new_tokens=decoding.max_new_tokens,
            do_sample=False,
            pad_token_id=self.pad_token_id,
            logits_processor=LogitsProcessorList([_ChooseForEachRequest(decoding, self.model.device)]),
            stopping_criteria=StoppingCriteriaList([_RequestsDone(decoding)]),
        )
        if self.prefix_cache is None:
            self.model.generate(**inputs.to(self.model.device), **options)
            return None
        rows = row_prompts(encoded, self.processor)
        padded_length = inputs["input_ids"].shape[1]
        starts = [padded_length - len(row.key) for row in rows]  # left padding: where each row's prompt begins
        # Each row may reuse up to all but its last token: generate() computes at least that one.
        found = [self.prefix_cache.longest(row.key, len(row.key) - 1) for row in rows]
        column = _shared_column(rows, starts, found)
        reused = [min(length, max(column - start, 0)) for (_, length), start in zip(found, starts, strict=True)]
        inputs = inputs.to(self.model.device)
        if any(reused):
            cache = self._prefilled_batch(rows, starts, [prefix for prefix, _ in found], reused, column)
            pixel_values, modality_embeds = _inputs_after(rows, starts, column)
            if pixel_values is not None:
                options["pixel_values"] = pixel_values.to(self.model.device)
            if modality_embeds is not None:
                options["modality_embeds"] = modality_embeds
            inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
            options[CACHE_ARGUMENT] = cache
        output = self.model.generate(**inputs, return_dict_in_generate=True, **options)
        self._store(rows, output.sequences[:, padded_length:], getattr(output, CACHE_ARGUMENT), padded_length)
        return reused

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

    def _store(self, rows: list[RowPrompt], generated: torch.Tensor, cache: DynamicCache, padded_length: int) -> None:
        """Keeps each row's prompt and answer as far as the cache holds them (the last token was never fed back)."""
        fed = generated.shape[1] - 1
        stops = set(self.stop_token_ids)
        for index, row in enumerate(rows):
            tokens = generated[index, :fed].tolist()
            own = next((position + 1 for position, token in enumerate(tokens) if token in stops), fed)
            start, end = padded_length - len(row.key), padded_length + own
            key = np.concatenate([row.key, np.asarray(tokens[:own], dtype=np.int64)])
            layers = [(layer.keys[index, :, start:end], layer.values[index, :, start:end]) for layer in cache.layers]
            self.prefix_cache.put(key, layers)


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


def _layer(cache: DynamicCache, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """A layer's keys and values `(1, heads, length, dim)`, or Nones where the cache holds no position yet."""
    if len(cache.layers) <= layer or cache.layers[layer].keys is None or cache.layers[layer].keys.numel() == 0:
        return None, None
    return cache.layers[layer].keys, cache.layers[layer].values
