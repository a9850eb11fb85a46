"""Batches for training: chat examples -> processor inputs with labels on assistant tokens only.

An example is `{"messages": [...], "images": [...], "modality_embeds": {"m1": [...]}}` (images and embeddings
optional), with messages in the chat template's form; `from_llava_record` turns LLaVA's conversation records into it.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from transformers import BatchFeature
from transformers.utils.chat_template_utils import render_jinja_template

from ..inference.records import loaded_embeddings
from ..processing import LlavaQwen3Processor

IGNORE_INDEX = -100
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")  # as transformers looks for it
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
    return {"messages": messages, "images": images or [], "modality_embeds": loaded_embeddings(record)}


class ChatCollator:
    """Renders each example with the chat template, runs the processor (right padding), and labels only what the
    template marks as the assistant's (`{% generation %}`: the replies and their end-of-turn token).

    A batch in which no token is labelled (truncation cut every reply) raises a ValueError instead of training on
    nothing; records that cannot be labelled are caught when the dataset is loaded (`RecordDataset`).
    """

    def __init__(self, processor: LlavaQwen3Processor, max_length: int | None = None) -> None:
        template = processor.chat_template
        if not isinstance(template, str) or not GENERATION_MARKER.search(template):
            raise ValueError(
                "the processor's chat template does not mark the assistant's replies with {% generation %} ... "
                "{% endgeneration %}, so the training labels cannot be found. Use the package's CHAT_TEMPLATE or add "
                "the markers around the assistant content of your template (docs/training.md)."
            )
        self.processor = processor
        self.max_length = max_length

    def __call__(self, examples: list[dict[str, Any]]) -> BatchFeature:
        texts, replies = render_jinja_template(
            [example["messages"] for example in examples],
            chat_template=self.processor.chat_template,
            return_assistant_tokens_mask=True,
        )
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
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        labels = assistant_labels(batch["input_ids"], batch.pop("offset_mapping"), replies)
        if not (labels != IGNORE_INDEX).any():
            raise ValueError(
                f"no token of this batch is an assistant reply (max_length={self.max_length} cut every reply?); "
                "raise max_length or drop such records."
            )
        batch["labels"] = labels
        return batch

    def check_example(self, example: dict[str, Any], num_images: int) -> None:
        """Raises a ValueError naming what is wrong when `example` (with `num_images` images, not yet decoded) cannot
        be trained on: its placeholders do not match its images or embeddings, truncation to `max_length` would cut
        a placeholder, or it would leave no token of an assistant reply. Only the text is tokenized."""
        texts, replies = render_jinja_template(
            [example["messages"]], chat_template=self.processor.chat_template, return_assistant_tokens_mask=True
        )
        processor = self.processor
        embeds = example.get("modality_embeds") or {}
        encoded = processor.encode_text(
            texts[0],
            processor.placeholder_lengths(num_images, embeds),
            truncation=self.max_length is not None,
            max_length=self.max_length,
            return_offsets_mapping=True,
        )
        offsets = encoded["offset_mapping"][0]
        if not any(start < stop and end > begin for start, end in offsets for begin, stop in replies[0]):
            raise ValueError(
                f"truncation to max_length={self.max_length} leaves no token of an assistant reply to learn from; "
                "raise max_length or shorten the prompt."
            )


def assistant_labels(
    input_ids: torch.Tensor, offsets: torch.Tensor, replies: list[list[tuple[int, int]]]
) -> torch.Tensor:
    """Labels equal to `input_ids` where a token overlaps a reply's character span, -100 elsewhere (padding has an
    empty span and never overlaps)."""
    starts, ends = offsets[..., 0], offsets[..., 1]
    in_reply = torch.zeros_like(input_ids, dtype=torch.bool)
    for row, spans in enumerate(replies):
        for start, end in spans:
            in_reply[row] |= (starts[row] < end) & (ends[row] > start)
    return input_ids.masked_fill(~in_reply, IGNORE_INDEX)
