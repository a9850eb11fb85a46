"""Processor of LLaVA-Qwen3: turns images and text (or chat messages) into model inputs.

It pairs transformers' own CLIP/SigLIP image processor with the Qwen tokenizer, expands each `<image>` in the text
to `image_seq_length` placeholder tokens (the model writes one image feature over each), and ships a Qwen ChatML chat
template that understands `{"type": "image"}` and `{"type": "text"}` content items.

Remote-code file: it is copied next to the weights and imports only transformers (and torch where it is installed:
the onnxruntime runner uses this processor without it).
"""

from __future__ import annotations

import json
import os
from typing import Any

import transformers
from transformers import BatchFeature, ProcessorMixin
from transformers.image_utils import load_image
from transformers.utils import to_numpy

try:
    import torch
except ImportError:  # the onnxruntime runner uses this processor where torch is not installed
    torch = None

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])

# Qwen's ChatML; an image item becomes "<image>\n" in front of its text, as in LLaVA's conversations, and an
# embedding item {"type": "embedding", "modality": "m1"} its placeholder ("token" if the item names one, else "<m1>").
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<image>\\n' -}}"
    "{%- elif item['type'] == 'embedding' -%}{{- item.get('token', '<' + item['modality'] + '>') + '\\n' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_TOKENIZER_KWARGS = ("truncation", "max_length", "pad_to_multiple_of", "return_attention_mask", "add_special_tokens")


class LlavaQwen3Processor(ProcessorMixin):
    r"""Image processor + Qwen tokenizer for [`LlavaQwen3ForConditionalGeneration`].

    Args:
        image_processor (`CLIPImageProcessor` or `SiglipImageProcessor`):
            Resizes and normalises images to the vision tower's input.
        tokenizer (`Qwen2Tokenizer`):
            The language model's tokenizer, holding `image_token` as a special token.
        chat_template (`str`, *optional*):
            Jinja chat template; defaults to Qwen ChatML with image items.
        image_token (`str`, *optional*, defaults to `"<image>"`):
            Placeholder for one image in the text.
        image_seq_length (`int`):
            Number of tokens each image occupies in the sequence (`config.image_seq_length`).
    """

    attributes = ["image_processor", "tokenizer"]
    if TRANSFORMERS_MAJOR < 5:  # 5.x reads the sub-processors from __init__'s signature and warns on these
        image_processor_class = "AutoImageProcessor"
        tokenizer_class = "AutoTokenizer"

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        image_token: str = "<image>",
        image_seq_length: int | None = None,
        modality_tokens: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(image_seq_length, int) or image_seq_length < 1:
            raise ValueError(
                f"image_seq_length must be a positive int (config.image_seq_length), got {image_seq_length!r}."
            )
        self.image_token = image_token
        self.image_token_id = _token_id(tokenizer, image_token)
        self.image_seq_length = image_seq_length
        self.modality_tokens = dict(modality_tokens or {})
        for token in self.modality_tokens.values():
            _token_id(tokenizer, token)
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE)

    def __call__(
        self,
        images: Any = None,
        text: str | list[str] | None = None,
        videos: Any = None,
        audio: Any = None,
        modality_embeds: dict[str, Any] | None = None,
        padding: bool | str = True,
        padding_side: str = "left",
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Tokenizes `text` with each placeholder expanded, turns `images` into `pixel_values` and passes the
        precomputed `modality_embeds` on in placeholder order.

        `images` may be one image, a flat list over all prompts, or one list per prompt; an image is a PIL image,
        a numpy array, a torch tensor or a file path. `modality_embeds` maps a modality name to its items in the same
        forms; an item is one vector `(dim,)` (one token) or `(n, dim)` (n tokens). Batches are left-padded for
        generation unless `padding_side` says otherwise.
        """
        if videos is not None or audio is not None:
            raise ValueError("LLaVA-Qwen3 takes images, text and embeddings; videos and audio are not supported.")
        if text is None:
            raise ValueError("text is required: write one placeholder (such as <image>) in it where each input goes.")
        texts = [text] if isinstance(text, str) else list(text)
        if not all(isinstance(item, str) for item in texts):
            raise ValueError("text must be a string or a list of strings.")
        modality_embeds = dict(modality_embeds or {})
        unknown = set(modality_embeds) - set(self.modality_tokens)
        if unknown:
            known = ", ".join(self.modality_tokens) or "none"
            raise ValueError(f"modality {sorted(unknown)[0]!r} is unknown to this processor; it knows: {known}.")

        flat_images = self._assign(texts, images, self.image_token, batch_ndim=4, what="images")
        expanded = [
            _expand(item, self.image_token, [self.image_seq_length] * item.count(self.image_token)) for item in texts
        ]
        expected_counts = {self.image_token_id: len(flat_images) * self.image_seq_length}
        flat_embeds = {}
        for name, token in self.modality_tokens.items():
            items = [
                _as_embedding(name, item)
                for item in self._assign(texts, modality_embeds.get(name), token, 3, f"{name} embeddings")
            ]
            lengths = iter(item.shape[0] for item in items)
            expanded = [_expand(item, token, [next(lengths) for _ in range(item.count(token))]) for item in expanded]
            expected_counts[_token_id(self.tokenizer, token)] = sum(item.shape[0] for item in items)
            if items:
                flat_embeds[name] = items

        tokenizer_kwargs = {key: kwargs[key] for key in _TOKENIZER_KWARGS if key in kwargs}
        text_inputs = self.tokenizer(
            expanded, padding=padding, padding_side=padding_side, return_tensors=return_tensors, **tokenizer_kwargs
        )
        self._check_truncation(text_inputs["input_ids"], expected_counts)

        data = dict(text_inputs)
        if flat_images:
            loaded = [_load(image) for image in flat_images]
            data["pixel_values"] = self.image_processor(loaded, return_tensors=return_tensors)["pixel_values"]
        batch = BatchFeature(data=data, tensor_type=return_tensors)
        if flat_embeds:
            batch["modality_embeds"] = flat_embeds  # after tensor conversion: a dict of lists stays as it is
        return batch

    def process_records(self, records: dict | list[dict], **kwargs: Any) -> BatchFeature:
        """Model inputs for records `{"text": ..., "images": [...], "multimodal_data": {"multimodal_embeddings":
        {"m1": [...], ...}}}` (images and multimodal_data optional); one record or a list."""
        records = [records] if isinstance(records, dict) else list(records)
        for index, record in enumerate(records):
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"record {index} must be a dict with a 'text' string.")
        names = {name for record in records for name in _record_embeddings(record)}
        images = [list(record.get("images") or []) for record in records]
        return self(
            images=images if any(images) else None,
            text=[record["text"] for record in records],
            modality_embeds={name: [list(_record_embeddings(r).get(name, [])) for r in records] for name in names},
            **kwargs,
        )

    def _assign(self, texts: list[str], items: Any, token: str, batch_ndim: int, what: str) -> list[Any]:
        """The items of one kind in placeholder order, checked against the placeholder counts of the text."""
        counts = [item.count(token) for item in texts]
        per_prompt = _items_per_prompt(items, len(texts))
        if per_prompt is not None:
            for index, (count, given) in enumerate(zip(counts, per_prompt, strict=True)):
                if count != len(given):
                    raise ValueError(
                        f"Prompt {index} holds {count} {token} placeholders but {len(given)} {what} were given for it."
                    )
            return [item for given in per_prompt for item in given]
        flat = _flatten(items, batch_ndim)
        if sum(counts) != len(flat):
            raise ValueError(
                f"The text holds {sum(counts)} {token} placeholders but {len(flat)} {what} were given; "
                f"write one {token} per item."
            )
        return flat

    def _check_truncation(self, input_ids: Any, expected_counts: dict[int, int]) -> None:
        rows = input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids
        for token_id, expected in expected_counts.items():
            found = sum(row.count(token_id) for row in rows)
            if found != expected:
                raise ValueError(
                    f"After tokenization the input holds {found} {self.tokenizer.convert_ids_to_tokens(token_id)} "
                    f"tokens, expected {expected}: truncation cut into a placeholder. Raise max_length or turn "
                    "truncation off."
                )

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> list[str]:
        """Saves like any processor, with the tokenizer config in the form both transformers lines read."""
        saved = super().save_pretrained(save_directory, **kwargs)
        # transformers 5 writes the extra special tokens as a list under `extra_special_tokens`, which 4.x cannot
        # parse (it expects a dict there); `additional_special_tokens` means the same to both lines.
        path = os.path.join(save_directory, "tokenizer_config.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as file:
                tokenizer_config = json.load(file)
            if isinstance(tokenizer_config.get("extra_special_tokens"), list):
                tokenizer_config["additional_special_tokens"] = tokenizer_config.pop("extra_special_tokens")
                with open(path, "w", encoding="utf-8") as file:
                    json.dump(tokenizer_config, file, indent=2, ensure_ascii=False)
        return saved

    @property
    def model_input_names(self) -> list[str]:
        return list(self.tokenizer.model_input_names) + ["pixel_values"]

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        """Forwards to the tokenizer's `batch_decode`."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        """Forwards to the tokenizer's `decode`."""
        return self.tokenizer.decode(*args, **kwargs)


def _token_id(tokenizer: Any, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError(f"The tokenizer has no {token!r} token; add it as a special token first.")
    return token_id


def _expand(text: str, token: str, lengths: list[int]) -> str:
    """Repeats the i-th `token` of `text` lengths[i] times."""
    pieces = text.split(token)
    return pieces[0] + "".join(token * length + piece for length, piece in zip(lengths, pieces[1:], strict=True))


def _is_batch_array(value: Any, batch_ndim: int) -> bool:
    return hasattr(value, "ndim") and value.ndim == batch_ndim


def _flatten(items: Any, batch_ndim: int) -> list[Any]:
    if items is None:
        return []
    if isinstance(items, (list, tuple)):
        return [item for entry in items for item in _flatten(entry, batch_ndim)]
    if _is_batch_array(items, batch_ndim):
        return list(items)
    return [items]


def _items_per_prompt(items: Any, num_prompts: int) -> list[list[Any]] | None:
    """The per-prompt lists when `items` is nested one list per prompt, else None."""
    if isinstance(items, (list, tuple)) and len(items) == num_prompts and items:
        if all(isinstance(entry, (list, tuple)) for entry in items):
            return [_flatten(entry, batch_ndim=-1) for entry in items]
    return None


def _as_embedding(name: str, item: Any) -> Any:
    """An item as a `(n, dim)` tensor (a numpy array where torch is missing); a `(dim,)` vector is one row."""
    tensor = to_numpy(item) if torch is None else torch.as_tensor(item)
    if tensor.ndim not in (1, 2):
        raise ValueError(f"a {name!r} embedding has shape {tuple(tensor.shape)}; expected (dim,) or (n, dim).")
    return tensor[None] if tensor.ndim == 1 else tensor


def _record_embeddings(record: dict) -> dict[str, Any]:
    return (record.get("multimodal_data") or {}).get("multimodal_embeddings") or {}


def _load(image: Any) -> Any:
    if isinstance(image, os.PathLike):
        image = os.fspath(image)
    if isinstance(image, str):
        if not image.startswith(("http://", "https://")) and not os.path.isfile(image):
            raise ValueError(f"Image file {image!r} does not exist.")
        return load_image(image)
    return image
