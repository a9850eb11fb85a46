"""Batches for training: chat examples -> processor inputs with labels on assistant tokens only.

An example is `{"messages": [...], "images": [...], "modality_embeds": {"m1": [...]}}` (images and embeddings
optional), with messages in the chat template's form; `from_llava_record` turns LLaVA's conversation records into it.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import BatchFeature

from ..inference.records import record_embeddings
from ..processing import LlavaQwen3Processor

IGNORE_INDEX = -100
LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def from_llava_record(record: dict[str, Any], images: list[Any] | None = None) -> dict[str, Any]:
    """A LLaVA conversation record (`{"conversations": [{"from": "human", "value": ...}, ...]}`) as an example."""
    messages = []
    for index, turn in enumerate(record.get("conversations") or []):
        role = LLAVA_ROLES.get(turn.get("from"))
        if role is None or not isinstance(turn.get("value"), str):
            raise ValueError(f"turn {index} of the record needs 'from' in {sorted(LLAVA_ROLES)} and a 'value' string.")
        messages.append({"role": role, "content": turn["value"]})
    if not any(message["role"] == "assistant" for message in messages):
        raise ValueError("the record has no assistant turn to learn from.")
    return {"messages": messages, "images": images or [], "modality_embeds": record_embeddings(record)}


class ChatCollator:
    """Renders each example with the chat template, runs the processor (right padding), and masks every label
    except the assistant replies and their end-of-turn token."""

    def __init__(self, processor: LlavaQwen3Processor, max_length: int | None = None) -> None:
        self.processor = processor
        self.max_length = max_length
        tokenizer = processor.tokenizer
        self.turn_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
        self.turn_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.assistant_header = tokenizer("assistant\n", add_special_tokens=False)["input_ids"]

    def __call__(self, examples: list[dict[str, Any]]) -> BatchFeature:
        texts = [self.processor.apply_chat_template(example["messages"]) for example in examples]
        images = [list(example.get("images") or []) for example in examples]
        names = {name for example in examples for name in example.get("modality_embeds") or {}}
        embeds = {name: [list((e.get("modality_embeds") or {}).get(name, [])) for e in examples] for name in names}
        batch = self.processor(
            images=images if any(images) else None,
            text=texts,
            modality_embeds=embeds,
            padding_side="right",
            truncation=self.max_length is not None,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch["labels"] = self.assistant_labels(batch["input_ids"], batch["attention_mask"])
        return batch

    def assistant_labels(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Labels equal to `input_ids` inside assistant replies (through `<|im_end|>`), -100 elsewhere."""
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        header = [self.turn_start, *self.assistant_header]
        for row, ids in enumerate(input_ids.tolist()):
            position = 0
            while position < len(ids):
                if ids[position : position + len(header)] == header:
                    start = position + len(header)
                    end = ids.index(self.turn_end, start) if self.turn_end in ids[start:] else len(ids) - 1
                    labels[row, start : end + 1] = input_ids[row, start : end + 1]
                    position = end + 1
                else:
                    position += 1
        return labels.masked_fill(attention_mask == 0, IGNORE_INDEX)
