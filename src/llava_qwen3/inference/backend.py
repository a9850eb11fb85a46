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

from ..processing import LlavaQwen3Processor
from .decoding import BatchDecoding
from .requests import Generation, GenerationRequest
from .sampling import context_overflow, stop_and_pad_ids

logger = logging.getLogger(__name__)
# Errors that mean "this request's input is bad", as opposed to a fault of the engine.
INPUT_ERRORS = (ValueError, TypeError, OSError)


class InferenceBackend(ABC):
    """Generates text for batches of requests; subclasses run one engine (see the module docstring)."""

    name: ClassVar[str]

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
    def _process(self, records: list[dict[str, Any]]) -> Any:
        """The batch of model inputs for `records` (a `BatchFeature`), or an input error."""

    @abstractmethod
    def _run_engine(self, inputs: Any, decoding: BatchDecoding) -> Sequence[int] | None:
        """Runs the engine's generation loop on `inputs` with `decoding`'s hooks until every row is done (the tokens
        reach `decoding`). Returns how many of each row's prompt tokens were read from a prefix cache instead of
        computed, or None where the engine keeps no cache."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One `Generation` per request, decoded together as one batch."""
        results: list[Generation | None] = [None] * len(requests)
        good = list(range(len(requests)))
        inputs = self._process_or_isolate(requests, good, results)
        if inputs is not None:
            too_long = self._over_context(requests, good, inputs)
            if too_long:
                for index, message in too_long.items():
                    results[index] = _error(message)
                good = [index for index in good if index not in too_long]
                inputs = self._process([requests[index].record for index in good]) if good else None
        if inputs is not None:
            decoding = BatchDecoding(
                [requests[index] for index in good], self.processor.tokenizer, self.stop_token_ids, self.pad_token_id
            )
            cached_tokens = self._run_engine(inputs, decoding) or [0] * len(good)
            prompt_tokens = [int(length) for length in inputs["attention_mask"].sum(-1).tolist()]
            for index, generation in zip(good, decoding.results(prompt_tokens, cached_tokens), strict=True):
                results[index] = generation
        return results

    def _process_or_isolate(
        self, requests: Sequence[GenerationRequest], good: list[int], results: list[Generation | None]
    ) -> Any:
        """The batch for the requests in `good`; when it fails, each request is tried alone, the bad ones are
        recorded in `results` and removed from `good`, and the batch is made of the rest."""
        try:
            return self._process([request.record for request in requests])
        except INPUT_ERRORS as error:
            if len(requests) == 1:
                good.clear()
                results[0] = _error(str(error))
                return None
        for index, request in enumerate(requests):
            message = self._process_error(request)
            if message is not None:
                results[index] = _error(message)
                good.remove(index)
        return self._process([requests[index].record for index in good]) if good else None

    def _process_error(self, request: GenerationRequest) -> str | None:
        try:
            self._process([request.record])
        except INPUT_ERRORS as error:
            return str(error)
        return None

    def _over_context(self, requests: Sequence[GenerationRequest], good: list[int], inputs: Any) -> dict[int, str]:
        """Requests whose prompt plus `max_new_tokens` would run past the model's context, with the reason."""
        lengths = inputs["attention_mask"].sum(-1).tolist()
        too_long = {}
        for index, length in zip(good, lengths, strict=True):
            message = context_overflow(int(length), requests[index].settings.max_new_tokens, self.max_positions)
            if message:
                too_long[index] = message
        return too_long


def _error(message: str) -> Generation:
    logger.info("request refused: %s", message)
    return Generation(finish_reason="error", error=message)
