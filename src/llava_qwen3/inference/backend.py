"""One interface over the engines that generate text: the PyTorch model and the onnxruntime runner.

Serving, evaluation and the generator hold an `InferenceBackend` and call `generate(requests)`; which engine runs
underneath is picked once, by `load_backend` (in `loading`). A backend turns the requests' records into one padded
batch with the shared processor, runs its engine's generation loop with the per-request hooks of `BatchDecoding`,
and returns one `Generation` per request. A request that cannot be processed (a bad image, a placeholder without its
input, a prompt past the context) comes back with `finish_reason="error"` and does not fail the others.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from transformers import BatchFeature

from ..processing import LlavaQwen3Processor
from .decoding import BatchDecoding
from .requests import Generation, GenerationRequest
from .sampling import context_overflow, stop_and_pad_ids

logger = logging.getLogger(__name__)
# Errors that mean "this request's input is bad", as opposed to a fault of the engine.
INPUT_ERRORS = (ValueError, TypeError, OSError)
# The dtypes the torch backend's CPU steps can keep the KV cache in (its `kv_cache_dtype`; by default the weights').
# Here, where torch is not imported, so that the commands offer the choice wherever they run.
KV_CACHE_DTYPES = ("float32", "bfloat16", "float16")


class InferenceBackend(ABC):
    """Generates text for batches of requests; subclasses run one engine (see the module docstring)."""

    name: ClassVar[str]
    tensor_type: ClassVar[str]  # what the engine takes: "pt" or "np"

    def __init__(self, processor: LlavaQwen3Processor, generation_config: dict[str, Any], max_positions: int) -> None:
        self.processor = processor
        self.stop_token_ids, self.pad_token_id = stop_and_pad_ids(
            generation_config.get("eos_token_id"), generation_config.get("pad_token_id")
        )
        self.max_positions = max_positions

    @property
    @abstractmethod
    def device(self) -> str:
        """Where the engine runs, e.g. "cpu" or "cuda:0"."""

    @abstractmethod
    def encode(self, record: dict[str, Any], processor: LlavaQwen3Processor | None = None) -> BatchFeature:
        """The model inputs of one record (`process_records` of it, a batch of one, unpadded, in the engine's tensor
        type), or an input error naming what is wrong. A caller on another thread than the one generating (the
        server's event loop) passes its own copy of the processor: a fast tokenizer fails when two threads use it at
        once. The result goes to `GenerationRequest.encoded`, so the record is not processed again."""

    @abstractmethod
    def _run_engine(
        self, inputs: BatchFeature, encoded: list[BatchFeature], decoding: BatchDecoding
    ) -> Sequence[int] | None:
        """Runs the engine's generation loop on `inputs` (the `encoded` records as one batch) with `decoding`'s
        hooks until every row is done (the tokens reach `decoding`). Returns how many of each row's prompt tokens were
        read from a prefix cache instead of computed, or None where the engine keeps no cache."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One `Generation` per request, decoded together as one batch. Each record is processed once (unless its
        request carries it `encoded` already); a request whose input is bad or too long for the context comes back
        with its error and leaves the others alone."""
        results: list[Generation | None] = [None] * len(requests)
        encoded: dict[int, BatchFeature] = {}
        for index, request in enumerate(requests):
            try:
                row = request.encoded if request.encoded is not None else self.encode(request.record)
            except INPUT_ERRORS as error:
                results[index] = _error(str(error))
                continue
            overflow = context_overflow(prompt_length(row), request.settings.max_new_tokens, self.max_positions)
            if overflow:
                results[index] = _error(overflow)
            else:
                encoded[index] = row
        if encoded:
            rows = list(encoded.values())
            inputs = self.processor.collate(rows, return_tensors=self.tensor_type)
            decoding = BatchDecoding(
                [requests[index] for index in encoded], self.processor.tokenizer, self.stop_token_ids, self.pad_token_id
            )
            cached_tokens = self._run_engine(inputs, rows, decoding) or [0] * len(rows)
            prompt_tokens = [prompt_length(row) for row in rows]
            for index, generation in zip(encoded, decoding.results(prompt_tokens, cached_tokens), strict=True):
                results[index] = generation
        return results


def prompt_length(encoded: BatchFeature) -> int:
    """How many positions an encoded record's prompt takes (placeholders expanded)."""
    return len(encoded["input_ids"][0])


def _error(message: str) -> Generation:
    logger.info("request refused: %s", message)
    return Generation(finish_reason="error", error=message)
