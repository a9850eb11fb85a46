"""The onnxruntime backend: an ONNX export run by `LlavaQwen3OnnxModel`, without torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import BatchFeature

from ..processing import LlavaQwen3Processor, record_embeddings
from .backend import InferenceBackend
from .decoding import BatchDecoding
from .onnx_runner import LlavaQwen3OnnxModel

DEFAULT_VARIANT = "quantized"  # INT8: about 3x the fp32 graphs' speed on CPU (docs/onnx.md)


class OnnxBackend(InferenceBackend):
    """An ONNX export of LLaVA-Qwen3 on onnxruntime. Exports carry images and text; embedding modalities are not
    exported, so a record holding `multimodal_data` is refused."""

    name = "onnx"
    tensor_type = "np"

    def __init__(self, runner: LlavaQwen3OnnxModel) -> None:
        super().__init__(runner.processor, runner.generation_config, runner.max_positions)
        self.runner = runner

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, variant: str | dict[str, str] = DEFAULT_VARIANT, **runner_options: Any
    ) -> OnnxBackend:
        """Loads the `variant` graphs of an export folder; `runner_options` go to `LlavaQwen3OnnxModel`."""
        return cls(LlavaQwen3OnnxModel(folder, variant=variant, **runner_options))

    @property
    def device(self) -> str:
        providers = self.runner.decoder_session.get_providers()
        return "cuda" if providers[0] == "CUDAExecutionProvider" else "cpu"

    def encode(self, record: dict[str, Any], processor: LlavaQwen3Processor | None = None) -> BatchFeature:
        if record_embeddings(record):
            raise ValueError(
                "the ONNX backend runs images and text only; embedding modalities are not exported. Use the "
                "torch backend for records with multimodal_data."
            )
        return (processor or self.processor).process_records(record, return_tensors=self.tensor_type)

    def _run_engine(self, inputs: BatchFeature, encoded: list[BatchFeature], decoding: BatchDecoding) -> None:
        # No prefix cache: no cached tokens.
        self.runner.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            pixel_values=inputs.get("pixel_values"),
            max_new_tokens=decoding.max_new_tokens,
            do_sample=False,
            pad_token_id=self.pad_token_id,
            logits_processor=[lambda input_ids, scores: decoding.forced_scores(scores)],
            stopping_criteria=[lambda input_ids, scores: decoding.advance(input_ids[:, -1])],
        )
