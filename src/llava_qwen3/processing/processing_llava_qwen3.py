"""Processor of LLaVA-Qwen3: turns images and text (or chat messages) into model inputs.

It pairs transformers' own CLIP/SigLIP image processor with the Qwen tokenizer, expands each `<image>` in the text
to `image_seq_length` placeholder tokens (the model writes one image feature over each), and ships a Qwen ChatML chat
template that understands `{"type": "image"}` and `{"type": "text"}` content items.

Remote-code file: it is copied next to the weights and imports only transformers.
"""

from __future__ import annotations

import json
import os
from typing import Any

import transformers
from transformers import BatchFeature, ProcessorMixin
from transformers.image_utils import load_image

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])

# Qwen's ChatML; an image item becomes "<image>\n" in front of its text, as in LLaVA's conversations.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<image>\\n' -}}"
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
    ) -> None:
        if not isinstance(image_seq_length, int) or image_seq_length < 1:
            raise ValueError(
                f"image_seq_length must be a positive int (config.image_seq_length), got {image_seq_length!r}."
            )
        image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        if image_token_id is None or image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"The tokenizer has no {image_token!r} token; add it as a special token first.")
        self.image_token = image_token
        self.image_token_id = image_token_id
        self.image_seq_length = image_seq_length
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE)

    def __call__(
        self,
        images: Any = None,
        text: str | list[str] | None = None,
        videos: Any = None,
        audio: Any = None,
        padding: bool | str = True,
        padding_side: str = "left",
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Tokenizes `text` with each `<image>` expanded, and turns `images` into `pixel_values`.

        `images` may be one image, a flat list over all prompts, or one list per prompt; an image is a PIL image,
        a numpy array, a torch tensor or a file path. Batches are left-padded for generation unless `padding_side`
        says otherwise.
        """
        if videos is not None or audio is not None:
            raise ValueError("LLaVA-Qwen3 takes images and text; videos and audio are not supported.")
        if text is None:
            raise ValueError("text is required: write one <image> in it where each image goes.")
        texts = [text] if isinstance(text, str) else list(text)
        if not all(isinstance(item, str) for item in texts):
            raise ValueError("text must be a string or a list of strings.")

        flat_images = self._check_image_counts(texts, images)
        expanded = [item.replace(self.image_token, self.image_token * self.image_seq_length) for item in texts]
        tokenizer_kwargs = {key: kwargs[key] for key in _TOKENIZER_KWARGS if key in kwargs}
        text_inputs = self.tokenizer(
            expanded, padding=padding, padding_side=padding_side, return_tensors=return_tensors, **tokenizer_kwargs
        )
        self._check_truncation(text_inputs["input_ids"], len(flat_images))

        data = dict(text_inputs)
        if flat_images:
            loaded = [_load(image) for image in flat_images]
            data["pixel_values"] = self.image_processor(loaded, return_tensors=return_tensors)["pixel_values"]
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _check_image_counts(self, texts: list[str], images: Any) -> list[Any]:
        counts = [item.count(self.image_token) for item in texts]
        per_prompt = _images_per_prompt(images, len(texts))
        if per_prompt is not None:
            for index, (count, given) in enumerate(zip(counts, per_prompt, strict=True)):
                if count != len(given):
                    raise ValueError(
                        f"Prompt {index} holds {count} {self.image_token} placeholders but {len(given)} images "
                        "were given for it."
                    )
            return [image for given in per_prompt for image in given]
        flat = _flatten(images)
        if sum(counts) != len(flat):
            raise ValueError(
                f"The text holds {sum(counts)} {self.image_token} placeholders but {len(flat)} images were given; "
                f"write one {self.image_token} per image."
            )
        return flat

    def _check_truncation(self, input_ids: Any, num_images: int) -> None:
        rows = input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids
        found = sum(row.count(self.image_token_id) for row in rows)
        if found != num_images * self.image_seq_length:
            raise ValueError(
                f"After tokenization the input holds {found} image tokens, expected "
                f"{num_images * self.image_seq_length}: truncation cut into an image. Raise max_length or turn "
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


def _is_batch_array(value: Any) -> bool:
    return hasattr(value, "ndim") and value.ndim == 4


def _flatten(images: Any) -> list[Any]:
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        return [image for item in images for image in _flatten(item)]
    if _is_batch_array(images):
        return list(images)
    return [images]


def _images_per_prompt(images: Any, num_prompts: int) -> list[list[Any]] | None:
    """The per-prompt lists when `images` is nested one list per prompt, else None."""
    if isinstance(images, (list, tuple)) and len(images) == num_prompts and images:
        if all(isinstance(item, (list, tuple)) for item in images):
            return [_flatten(item) for item in images]
    return None


def _load(image: Any) -> Any:
    if isinstance(image, os.PathLike):
        image = os.fspath(image)
    if isinstance(image, str):
        if not image.startswith(("http://", "https://")) and not os.path.isfile(image):
            raise ValueError(f"Image file {image!r} does not exist.")
        return load_image(image)
    return image
