"""One interface over the engines that generate text: the PyTorch model and the onnxruntime runner.

Serving, evaluation and the generator hold an `InferenceBackend` and call `generate(requests)`; which engine runs
underneath is picked once, by `load_backend`. A backend turns the requests' records into one padded batch with the
shared processor, runs its engine's generation loop with the per-request hooks of `BatchDecoding`, and returns one
`Generation` per request. A request that cannot be processed (a bad image, a placeholder without its input, a prompt
past the context) comes back with `finish_reason="error"` and does not fail the others.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from ..processing import LlavaQwen3Processor
from .decoding import BatchDecoding
from .requests import Generation, GenerationRequest

logger = logging.getLogger(__name__)
BACKENDS = ("torch", "onnx")
QUANTIZATIONS = ("int8",)  # what the torch backend can quantize a model to when it loads it
# Errors that mean "this request's input is bad", as opposed to a fault of the engine.
INPUT_ERRORS = (ValueError, TypeError, OSError)


class InferenceBackend(ABC):
    """Generates text for batches of requests; subclasses run one engine (see the module docstring)."""

    name: ClassVar[str]
    tensor_type: ClassVar[str]  # what the processor returns for this engine: "pt" or "np"

    def __init__(self, processor: LlavaQwen3Processor, generation_config: dict[str, Any], max_positions: int) -> None:
        self.processor = processor
        stops = generation_config.get("eos_token_id")
        self.stop_token_ids = [] if stops is None else [stops] if isinstance(stops, int) else list(stops)
        pad = generation_config.get("pad_token_id")
        self.pad_token_id = pad if pad is not None else (self.stop_token_ids or [0])[0]
        self.max_positions = max_positions

    @property
    @abstractmethod
    def device(self) -> str:
        """Where the engine runs, e.g. "cpu" or "cuda:0"."""

    @abstractmethod
    def _process(self, records: list[dict[str, Any]]) -> Any:
        """The batch of model inputs for `records` (a `BatchFeature`), or an input error."""

    @abstractmethod
    def _decode(self, inputs: Any, decoding: BatchDecoding) -> Sequence[int] | None:
        """Runs the engine's generation loop on `inputs` with `decoding`'s hooks until every row is done; returns how
        many of each row's prompt tokens were read from a prefix cache (None: the engine keeps none)."""

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
            cached_tokens = self._decode(inputs, decoding) or [0] * len(good)
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
            limit = requests[index].settings.max_new_tokens
            if length + limit > self.max_positions:
                too_long[index] = (
                    f"the prompt ({int(length)} tokens) plus max_new_tokens ({limit}) exceeds the model's context of "
                    f"{self.max_positions} tokens; shorten the prompt or lower max_new_tokens."
                )
        return too_long


def _error(message: str) -> Generation:
    logger.info("request refused: %s", message)
    return Generation(finish_reason="error", error=message)


def load_backend(model: str | Path, backend: str = "torch", **options: Any) -> InferenceBackend:
    """The backend `backend` ("torch" or "onnx") over the checkpoint or export at `model`.

    Options go to the backend's `from_pretrained`: for "torch", `device`, `dtype`, `quantize` (one of
    `QUANTIZATIONS`), `prefix_cache_bytes` (reuse of earlier prompts' KV caches) and any `from_pretrained` argument of
    the model; for "onnx", `variant` (default "quantized",
    the INT8 graphs) and onnxruntime's `providers`.
    """
    if backend == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend.from_pretrained(model, **options)
    if backend == "onnx":
        from .onnx_backend import OnnxBackend

        return OnnxBackend.from_pretrained(model, **options)
    raise ValueError(f"backend {backend!r} is unknown; expected one of {', '.join(BACKENDS)}.")
