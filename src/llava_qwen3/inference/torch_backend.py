"""The PyTorch backend: the model's own `generate()`, with the per-request hooks as a logits processor and a stopping
criterion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from ..modeling import LlavaQwen3ForConditionalGeneration
from ..processing import LlavaQwen3Processor
from .backend import QUANTIZATIONS, InferenceBackend
from .decoding import BatchDecoding
from .int8 import quantize_linear_layers_int8
from .records import check_embedding_shapes, with_loaded_embeddings


class _ChooseForEachRequest(LogitsProcessor):
    """Leaves each row's token, drawn with its request's settings, as the only candidate of a greedy step."""

    def __init__(self, decoding: BatchDecoding) -> None:
        self.decoding = decoding

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        forced = self.decoding.forced_scores(scores.float().cpu().numpy())
        return torch.from_numpy(forced).to(scores.device, scores.dtype)


class _RequestsDone(StoppingCriteria):
    """Records each step's tokens and says which requests are done."""

    def __init__(self, decoding: BatchDecoding) -> None:
        self.decoding = decoding

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        done = self.decoding.advance(input_ids[:, -1].cpu().numpy())
        return torch.from_numpy(np.asarray(done)).to(input_ids.device)


class TorchBackend(InferenceBackend):
    """`LlavaQwen3ForConditionalGeneration` and its processor."""

    name = "torch"
    tensor_type = "pt"

    def __init__(self, model: LlavaQwen3ForConditionalGeneration, processor: LlavaQwen3Processor) -> None:
        super().__init__(processor, model.generation_config.to_dict(), model.config.text_config.max_position_embeddings)
        self.model = model.eval()

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        quantize: str | None = None,
        **kwargs: Any,
    ) -> TorchBackend:
        """Loads a checkpoint folder or repo id onto `device` (default: CUDA where present, else CPU) in `dtype`
        (default: as saved); `quantize="int8"` then gives every linear layer INT8 weights (CPU only, see `int8`)."""
        if quantize is not None and quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize={quantize!r} is unknown; expected one of {', '.join(QUANTIZATIONS)} or None.")
        device = device or ("cuda" if torch.cuda.is_available() and quantize is None else "cpu")
        model = LlavaQwen3ForConditionalGeneration.from_pretrained(checkpoint, dtype=dtype or "auto", **kwargs)
        model = model.to(device)
        if quantize == "int8":
            quantize_linear_layers_int8(model)
        return cls(model, LlavaQwen3Processor.from_pretrained(checkpoint))

    @property
    def device(self) -> str:
        return str(self.model.device)

    def _process(self, records: list[dict[str, Any]]) -> Any:
        records = [with_loaded_embeddings(record) for record in records]
        for record in records:
            check_embedding_shapes(record, self.model.config.modalities)
        return self.processor.process_records(records, return_tensors="pt")

    @torch.inference_mode()
    def _decode(self, inputs: Any, decoding: BatchDecoding) -> None:
        self.model.generate(
            **inputs.to(self.model.device),
            max_new_tokens=decoding.max_new_tokens,
            do_sample=False,
            pad_token_id=self.pad_token_id,
            logits_processor=LogitsProcessorList([_ChooseForEachRequest(decoding)]),
            stopping_criteria=StoppingCriteriaList([_RequestsDone(decoding)]),
        )
