"""A records-in, text-out interface over processor + generate().

    generator = LlavaQwen3Generator.from_pretrained("checkpoint")
    generator.generate({"text": "<m1> What colour?", "multimodal_data": {"multimodal_embeddings": {"m1": [vector]}}})

A record holds "text" with placeholders, optional "images" (PIL images or files) and optional
"multimodal_data": {"multimodal_embeddings": {name: [items]}}, where an item is a tensor, an array, or a .npy or
.safetensors file holding one tensor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .modeling import LlavaQwen3ForConditionalGeneration
from .processing import LlavaQwen3Processor
from .records import with_loaded_embeddings


class LlavaQwen3Generator:
    """Generates text for records holding text, images and precomputed embeddings."""

    def __init__(self, model: LlavaQwen3ForConditionalGeneration, processor: LlavaQwen3Processor) -> None:
        self.model = model.eval()
        self.processor = processor

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path, **model_kwargs: Any) -> LlavaQwen3Generator:
        model = LlavaQwen3ForConditionalGeneration.from_pretrained(checkpoint, **model_kwargs)
        return cls(model, LlavaQwen3Processor.from_pretrained(checkpoint))

    @torch.no_grad()
    def generate(self, records: dict | list[dict], max_new_tokens: int = 64, **generate_kwargs: Any) -> str | list[str]:
        """The generated text for one record, or a list of texts for a list of records (run as one batch)."""
        single = isinstance(records, dict)
        batch = [records] if single else list(records)
        inputs = self.processor.process_records(
            [with_loaded_embeddings(record) for record in batch], return_tensors="pt"
        )
        inputs = inputs.to(self.model.device)
        generate_kwargs.setdefault("do_sample", False)
        output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, **generate_kwargs)
        texts = self.processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return texts[0] if single else texts
