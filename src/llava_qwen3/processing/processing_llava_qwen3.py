"""Processor of LLaVA-Qwen3: turns images and text (or chat messages) into model inputs.

It pairs transformers' own CLIP/SigLIP image processor with the Qwen tokenizer, expands each `<image>` in the text
to `image_seq_length` placeholder tokens (the model writes one image feature over each), and ships a Qwen ChatML chat
template that understands `{"type": "image"}`, `{"type": "text"}` and `{"type": "embedding"}` content items and marks
the assistant's replies for `return_assistant_tokens_mask`. Keyword arguments are routed the way transformers'
built-in processors route them (`ProcessingKwargs`): flat, per modality (`text_kwargs=`, `images_kwargs=`) or common
(`common_kwargs=`), over the tokenizer's saved defaults.

Remote-code file: it is copied next to the weights and imports only transformers, numpy and Pillow (which
transformers' image processors need anyway), and torch where it is installed (the onnxruntime runner uses this
processor without it).
"""

import base64
import bisect
import dataclasses
import io
import itertools
import json
import os
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import transformers
from PIL import Image, ImageOps
from transformers import BatchFeature, ProcessorMixin
from transformers.processing_utils import MultiModalData, ProcessingKwargs, Unpack
from transformers.utils import to_numpy

try:
    import torch
except ImportError:  # the onnxruntime runner uses this processor where torch is not installed
    torch = None

# What differs between the transformers lines (5.x and 4.57), in one place: the code below reads this name and never the
# version itself. 4.x finds a processor's parts through the `*_class` attributes; 5.x reads them from __init__'s
# signature and warns on those attributes.
TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])
NAMES_PART_CLASSES = TRANSFORMERS_MAJOR < 5

IMAGE_TOKEN = "<image>"
# How an image stands in a text: its placeholder on a line of its own in front (LLaVA's conversations, the chat
# template's image item).
IMAGE_LINE = IMAGE_TOKEN + "\n"
# A record: {"text": ..., "images": [...], RECORD_DATA: {RECORD_EMBEDDINGS: {"m1": [items], ...}}} (images and
# RECORD_DATA optional), what `process_records` reads and the backends, the server and training pass around.
RECORD_DATA, RECORD_EMBEDDINGS = "multimodal_data", "multimodal_embeddings"
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))  # either holds a Qwen tokenizer

# Qwen's ChatML; an image item becomes "<image>\n" in front of its text, as in LLaVA's conversations, and an
# embedding item {"type": "embedding", "modality": "m1"} its placeholder ("token" if the item names one, else "<m1>").
# An assistant's reply and its end-of-turn token are what the model learns to generate: `{% generation %}` marks them
# for `return_assistant_tokens_mask`.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}{%- generation -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>' -}}"
    "{%- endgeneration -%}{{- '\\n' -}}"
    "{%- else -%}"
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
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    """Bounds on an image from outside, checked before it is read whole or decoded. The processor loads within its
    own settings (`LlavaQwen3Processor.image_limits`); the server within its limits and formats."""

    max_pixels: int = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's decompression-bomb threshold
    max_bytes: int = 20_000_000  # of a fetched image
    timeout: float = 10.0  # seconds, for connecting and for each read of a fetch
    max_redirects: int = 3  # followed only within the same host and port
    formats: tuple[str, ...] | None = None  # Pillow formats opened; None: every format Pillow reads


class ImageLoadError(ValueError):
    """An image refused by `fetch_image_bytes` or `open_image`; `reason` names the check: "too_many_bytes",
    "too_many_pixels", "not_an_image", "corrupt", "fetch_failed" or "redirect"."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class LlavaQwen3ProcessorKwargs(ProcessingKwargs, total=False):
    """The processor's keyword arguments; batches are padded (on the tokenizer's side: left, for generation)."""

    _defaults = {"text_kwargs": {"padding": True}}


class LlavaQwen3Processor(ProcessorMixin):
    r"""Image processor + Qwen tokenizer for [`LlavaQwen3ForConditionalGeneration`].

    Args:
        image_processor (`CLIPImageProcessor` or `SiglipImageProcessor`):
            Resizes and normalises images to the vision tower's input.
        tokenizer (`Qwen2Tokenizer`):
            The language model's tokenizer, holding `image_token` as a special token.
        chat_template (`str`, *optional*):
            Jinja chat template; defaults to Qwen ChatML with image and embedding items.
        image_token (`str`, *optional*, defaults to `"<image>"`):
            Placeholder for one image in the text.
        image_seq_length (`int`):
            Number of tokens each image occupies in the sequence (`config.image_seq_length`); needed to process
            images (a processor without it handles text only).
        modality_tokens (`dict[str, str]`, *optional*):
            The placeholder token of each embedding modality by name (`{"m1": "<m1>"}`), as in `config.modalities`.
    """

    attributes = ["image_processor", "tokenizer"]
    valid_processor_kwargs = LlavaQwen3ProcessorKwargs
    if NAMES_PART_CLASSES:
        image_processor_class = "AutoImageProcessor"
        tokenizer_class = "AutoTokenizer"

    # Bounds on image inputs, checked before an image is decoded or fetched (set them on an instance to change them).
    max_image_pixels = ImageLimits.max_pixels
    remote_images = True  # fetch http(s) image URLs at all; a server taking untrusted input turns this off
    remote_image_timeout = ImageLimits.timeout
    remote_image_max_bytes = ImageLimits.max_bytes

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        image_token: str = IMAGE_TOKEN,
        image_seq_length: int | None = None,
        modality_tokens: dict[str, str] | None = None,
    ) -> None:
        if image_seq_length is not None and (not isinstance(image_seq_length, int) or image_seq_length < 1):
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
        **kwargs: Unpack[LlavaQwen3ProcessorKwargs],
    ) -> BatchFeature:
        """Tokenizes `text` with each placeholder expanded, turns `images` into `pixel_values` and passes the
        precomputed `modality_embeds` on in placeholder order.

        `images` may be one image, a flat list over all prompts, or one list per prompt; an image is a PIL image, a
        numpy array or torch tensor (`(H, W)`, `(H, W, C)` or `(C, H, W)`; uint8 or floats in [0, 255], where floats
        that all lie in [0, 1] are read as already rescaled), a file path, or an http(s) or data URL.
        `modality_embeds` maps a modality name to its items in the same nesting; an item is one vector `(dim,)` (one
        token) or `(n, dim)` (n tokens). Other keyword arguments go to the tokenizer and the image processor as in
        transformers' processors (flat, or as `text_kwargs=` / `images_kwargs=` / `common_kwargs=`). Batches are
        padded on the tokenizer's side (left, for generation) unless `padding_side` says otherwise. With
        `return_offsets_mapping=True` the offsets refer to the text as given: every token of an expanded placeholder
        maps to the placeholder's span.
        """
        if videos is not None or audio is not None:
            raise ValueError("LLaVA-Qwen3 takes images, text and embeddings; videos and audio are not supported.")
        texts = _checked_texts(text)
        with _naming_keyword_arguments(kwargs):
            output_kwargs = self._merge_kwargs(
                LlavaQwen3ProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
            )
        text_kwargs, images_kwargs = output_kwargs["text_kwargs"], output_kwargs["images_kwargs"]
        _check_output_size(images_kwargs, self.max_image_pixels)
        return_tensors = text_kwargs.pop("return_tensors", None)
        images_kwargs.pop("return_tensors", None)
        return_mm_token_type_ids = text_kwargs.pop("return_mm_token_type_ids", None) or output_kwargs.get(
            "return_mm_token_type_ids", False
        )
        # Offsets are given in the caller's text, so no replacement offsets are needed to map them back.
        text_kwargs.pop("return_text_replacement_offsets", None)

        modality_embeds = self._checked_modality_embeds(modality_embeds)
        flat_images = self._assign(texts, images, self.image_token, batch_ndim=4, what="images")
        flat_embeds = {}
        for name, token in self.modality_tokens.items():
            items = [
                _as_embedding(name, item)
                for item in self._assign(texts, modality_embeds.get(name), token, 3, f"{name} embeddings")
            ]
            if items:
                flat_embeds[name] = items
        text_inputs = self.encode_text(texts, self.placeholder_lengths(len(flat_images), flat_embeds), **text_kwargs)
        data = dict(text_inputs)
        if return_mm_token_type_ids:
            data["mm_token_type_ids"] = [
                [int(token == self.image_token_id) for token in _as_list(row)] for row in text_inputs["input_ids"]
            ]
        if flat_images:
            loaded = [self._load_image(image, images_kwargs.get("do_rescale", True)) for image in flat_images]
            with _naming_keyword_arguments(kwargs):
                pixels = self.image_processor(loaded, return_tensors=return_tensors, **images_kwargs)["pixel_values"]
            data["pixel_values"] = pixels
        batch = BatchFeature(data=data, tensor_type=return_tensors)
        if flat_embeds:
            batch["modality_embeds"] = flat_embeds  # after tensor conversion: a dict of lists stays as it is
        return batch

    def _checked_modality_embeds(self, modality_embeds: Any) -> dict[str, Any]:
        """`modality_embeds` as a dict of this processor's modalities (empty for None), or the error naming what is
        wrong."""
        if modality_embeds is not None and not isinstance(modality_embeds, dict):
            raise TypeError(
                f"modality_embeds must be a dict of modality name to items, got {type(modality_embeds).__name__}."
            )
        modality_embeds = dict(modality_embeds or {})
        unknown = set(modality_embeds) - set(self.modality_tokens)
        if unknown:
            known = ", ".join(self.modality_tokens) or "none"
            raise ValueError(f"modality {sorted(unknown)[0]!r} is unknown to this processor; it knows: {known}.")
        return modality_embeds

    def placeholder_lengths(
        self, num_images: int = 0, modality_embeds: dict[str, list[Any]] | None = None
    ) -> dict[str, list[int]]:
        """How many positions each input takes in the sequence, by placeholder token and in placeholder order: every
        image `image_seq_length`, an embedding item one per vector (`(dim,)`: 1, `(n, dim)`: n). This is the one
        place that says it; training, the server, the prefix cache and vLLM ask here."""
        if num_images and self.image_seq_length is None:
            raise ValueError(
                "this processor has no image_seq_length (config.image_seq_length), so it cannot place images."
            )
        lengths = {self.image_token: [self.image_seq_length] * num_images}
        for name, token in self.modality_tokens.items():
            lengths[token] = [embedding_length(item) for item in (modality_embeds or {}).get(name, [])]
        return lengths

    def encode_text(self, text: str | list[str], placeholder_lengths: dict[str, list[int]], **text_kwargs: Any) -> Any:
        """The tokenizer's output for `text` with each placeholder expanded to the next of its `placeholder_lengths`
        (from `placeholder_lengths()`, consumed in order over the batch); no image is needed. A ValueError when the
        placeholders do not match the lengths or truncation would cut into a placeholder. With
        `return_offsets_mapping=True` the offsets refer to the text as given: every token of an expanded placeholder
        maps to the placeholder's span."""
        texts = _checked_texts(text)
        for token, counts in placeholder_lengths.items():
            found = sum(item.count(token) for item in texts)
            if found != len(counts):
                what = "images" if token == self.image_token else "embeddings"
                raise ValueError(_placeholder_count_error(found, len(counts), token, what))
        lengths = {token: iter(counts) for token, counts in placeholder_lengths.items()}
        expansions = [_expand(item, lengths) for item in texts]
        with _naming_keyword_arguments(text_kwargs):
            text_inputs = self.tokenizer([expanded for expanded, _ in expansions], **text_kwargs)
        self._check_truncation(
            text_inputs["input_ids"],
            {_token_id(self.tokenizer, token): sum(counts) for token, counts in placeholder_lengths.items()},
        )
        if "offset_mapping" in text_inputs:
            text_inputs["offset_mapping"] = [
                [spans.original(start, end) for start, end in offsets]
                for offsets, (_, spans) in zip(text_inputs["offset_mapping"], expansions, strict=True)
            ]
        return text_inputs

    def placeholder_starts(
        self, input_ids: list[int], placeholder_lengths: dict[str, list[int]]
    ) -> dict[str, list[int]]:
        """Where each input's run of placeholder tokens begins in one prompt's expanded `input_ids`, by placeholder
        token and in input order (runs of one token may touch: the lengths tell them apart)."""
        input_ids = _as_list(input_ids)
        starts = {}
        for token, counts in placeholder_lengths.items():
            token_id = _token_id(self.tokenizer, token)
            positions = [position for position, value in enumerate(input_ids) if value == token_id]
            if len(positions) != sum(counts):
                raise ValueError(
                    f"input_ids hold {len(positions)} {token} tokens; the inputs take {sum(counts)} positions."
                )
            first_of_each = itertools.accumulate(counts[:-1], initial=0)  # each input's first placeholder, counted
            starts[token] = [positions[index] for index in first_of_each] if counts else []
        return starts

    def collate(self, rows: list[BatchFeature], return_tensors: str | None = None) -> BatchFeature:
        """One batch of `rows`, each the output of `process_records` for one record: token ids padded on the
        tokenizer's side (left, for generation), pixel values and embedding items concatenated in row order."""
        ids = [_as_list(row["input_ids"][0]) for row in rows]
        data = dict(self.tokenizer.pad({"input_ids": ids}, return_tensors=return_tensors))
        pixels = [row["pixel_values"] for row in rows if row.get("pixel_values") is not None]
        if pixels:
            concatenate = torch.cat if torch is not None and isinstance(pixels[0], torch.Tensor) else np.concatenate
            data["pixel_values"] = concatenate(pixels)
        batch = BatchFeature(data=data)
        embeds: dict[str, list[Any]] = {}
        for row in rows:
            for name, items in (row.get("modality_embeds") or {}).items():
                embeds.setdefault(name, []).extend(items)
        if embeds:
            batch["modality_embeds"] = embeds
        return batch

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> "LlavaQwen3Processor":
        """Loads a processor like any transformers processor; a local folder without its tokenizer files is refused
        (transformers would build an empty tokenizer that silently drops every word)."""
        folder = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(folder) and not any(
            all(os.path.isfile(os.path.join(folder, name)) for name in names) for names in TOKENIZER_FILES
        ):
            raise ValueError(
                f"{folder} holds no tokenizer: it needs tokenizer.json (or vocab.json with merges.txt). Copy the "
                "tokenizer files of the checkpoint it came from, or save the processor with save_pretrained."
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def process_records(self, records: dict | list[dict], **kwargs: Any) -> BatchFeature:
        """Model inputs for records `{"text": ..., "images": [...], "multimodal_data": {"multimodal_embeddings":
        {"m1": [...], ...}}}` (images and multimodal_data optional); one record or a list."""
        records = [records] if isinstance(records, dict) else list(records)
        if not records:
            raise ValueError("records is empty; pass a record or a non-empty list of records.")
        for index, record in enumerate(records):
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"record {index} must be a dict with a 'text' string.")
        names = {name for record in records for name in record_embeddings(record)}
        images = [list(record.get("images") or []) for record in records]
        return self(
            images=images if any(images) else None,
            text=[record["text"] for record in records],
            modality_embeds={name: [list(record_embeddings(r).get(name, [])) for r in records] for name in names},
            **kwargs,
        )

    def _get_num_multimodal_tokens(self, image_sizes: list[list[int]] | None = None, **kwargs: Any) -> MultiModalData:
        """How many placeholder tokens each image of the given `(height, width)` sizes takes: always
        `image_seq_length`, since every image is resized to the tower's input (serving code asks this)."""
        data = {}
        if image_sizes is not None:
            data["num_image_tokens"] = [self.image_seq_length] * len(image_sizes)
            data["num_image_patches"] = [1] * len(image_sizes)
        return MultiModalData(**data)

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
            raise ValueError(_placeholder_count_error(sum(counts), len(flat), token, what))
        return flat

    def _check_truncation(self, input_ids: Any, expected_counts: dict[int, int]) -> None:
        rows = [_as_list(row) for row in input_ids]
        for token_id, expected in expected_counts.items():
            found = sum(row.count(token_id) for row in rows)
            if found != expected:
                raise ValueError(
                    f"After tokenization the input holds {found} {self.tokenizer.convert_ids_to_tokens(token_id)} "
                    f"tokens, expected {expected}: truncation cut into a placeholder. Raise max_length or turn "
                    "truncation off."
                )

    def _load_image(self, image: Any, rescaling: bool) -> Any:
        """An image ready for the image processor: files and URLs opened (size checked before decoding), 16-bit
        pictures brought to 8 bits, arrays checked and, when floats already in [0, 1] meet a rescaling processor,
        brought to [0, 255]."""
        if isinstance(image, os.PathLike):
            image = os.fspath(image)
        if isinstance(image, str):
            return self._image_from_string(image)
        if isinstance(image, Image.Image):
            return _eight_bit(image)
        if isinstance(image, np.ndarray) or (torch is not None and isinstance(image, torch.Tensor)):
            return _checked_array(image, rescaling)
        raise TypeError(
            f"an image must be a PIL image, a numpy array, a torch tensor, a file path or a URL; got "
            f"{type(image).__name__}."
        )

    @property
    def image_limits(self) -> "ImageLimits":
        """The bounds this processor loads images within (its `max_image_pixels` and `remote_image_*` settings)."""
        return ImageLimits(
            max_pixels=self.max_image_pixels, max_bytes=self.remote_image_max_bytes, timeout=self.remote_image_timeout
        )

    def _image_from_string(self, source: str) -> Image.Image:
        """The image a path, an http(s) URL or a data URL names, loaded by `open_image` within `image_limits`."""
        limits = self.image_limits
        if source.startswith(("http://", "https://")):
            if not self.remote_images:
                raise ValueError(f"image URL {source!r} refused: this processor does not fetch remote images.")
            return open_image(fetch_image_bytes(source, limits), source, limits)
        if source.startswith("data:"):
            header, _, payload = source.partition(",")
            if not header.startswith("data:image/") or not header.endswith(";base64"):
                raise ValueError("an image data URL must look like 'data:image/<type>;base64,<data>'.")
            try:
                data = base64.b64decode(payload, validate=True)
            except ValueError as error:
                raise ValueError(f"the image data URL holds invalid base64: {error}") from error
            return open_image(data, "the image data URL", limits)
        if not os.path.isfile(source):
            raise ValueError(f"Image file {source!r} does not exist.")
        return open_image(source, f"image file {source!r}", limits)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> list[str]:
        """Saves like any processor, with the tokenizer config in the form both transformers lines read; saving
        leaves the processor as it was (transformers' remote-code saving sets an `auto_map` attribute on it)."""
        had_auto_map = "auto_map" in self.__dict__
        saved = super().save_pretrained(save_directory, **kwargs)
        if not had_auto_map:
            self.__dict__.pop("auto_map", None)
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


def fetch_image_bytes(url: str, limits: ImageLimits, name: str | None = None) -> bytes:
    """The body of an http(s) URL, read within `limits` (bytes, time, redirects to the same host and port only)."""
    name = name or f"image URL {url!r}"
    opener = urllib.request.build_opener(_SameHostRedirects(url, limits.max_redirects))
    try:
        with opener.open(url, timeout=limits.timeout) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limits.max_bytes:
                raise ImageLoadError(f"{name} holds more than {limits.max_bytes:,} bytes.", "too_many_bytes")
            data = response.read(limits.max_bytes + 1)
    except ImageLoadError:
        raise
    except _RedirectRefused as error:
        raise ImageLoadError(f"{name}: {error}; refused.", "redirect") from None
    except (OSError, ValueError) as error:
        raise ImageLoadError(f"{name} could not be fetched: {error}", "fetch_failed") from error
    if len(data) > limits.max_bytes:
        raise ImageLoadError(f"{name} holds more than {limits.max_bytes:,} bytes.", "too_many_bytes")
    return data


def open_image(source: "bytes | str | os.PathLike", name: str, limits: ImageLimits, decode: bool = True) -> Any:
    """The image in encoded bytes or at a path, refused before decoding when it declares more than
    `limits.max_pixels` or is not one of `limits.formats`; EXIF-rotated, 16-bit pictures scaled to 8 bits. With
    `decode=False` it is only checked (PNG chunk checksums, JPEG decoded at 1/8 scale) and None is returned."""
    too_big = f"{name} declares more pixels than the {limits.max_pixels:,} accepted"
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=limits.formats)
    except Image.DecompressionBombError as error:  # Pillow's own refusal, at twice its warning threshold
        raise ImageLoadError(f"{too_big} (max_image_pixels; Pillow: {error})", "too_many_pixels") from None
    except Image.UnidentifiedImageError:
        formats = f"one of {', '.join(limits.formats)}" if limits.formats else "a format Pillow reads"
        message = f"{name} cannot be decoded: its bytes are not an image in {formats}."
        raise ImageLoadError(message, "not_an_image") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"{name} cannot be decoded: {error}", "not_an_image") from error
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageLoadError(f"{too_big}: {width}x{height} (max_image_pixels).", "too_many_pixels")
    try:
        if not decode:
            if image.format == "PNG":
                image.verify()  # every chunk's checksum, without decompressing
            else:
                image.draft("RGB", (64, 64))  # JPEG: decoded at 1/8 scale, enough to find a truncated file
                image.load()
            return None
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        message = f"{name} cannot be decoded (truncated or corrupt {image.format}?): {error}"
        raise ImageLoadError(message, "corrupt") from error
    return _eight_bit(ImageOps.exif_transpose(image))


class _RedirectRefused(ValueError):
    pass


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follows at most `max_redirects` redirects, each only to the host and port the request started on (no detours
    to other, maybe internal, hosts)."""

    def __init__(self, url: str, max_redirects: int) -> None:
        self.origin = url_host_port(url)
        self.max_redirections = max_redirects

    def redirect_request(self, request, fp, code, message, headers, new_url):  # noqa: ANN001, ANN201
        if url_host_port(new_url) != self.origin:
            raise _RedirectRefused(f"redirect to another host ({new_url[:100]})")
        return super().redirect_request(request, fp, code, message, headers, new_url)

    def http_error_302(self, request, fp, code, message, headers):  # noqa: ANN001, ANN201
        redirects = getattr(request, "redirect_dict", {})
        if sum(redirects.values()) >= self.max_redirections:
            raise _RedirectRefused(f"more than {self.max_redirections} redirects")
        return super().http_error_302(request, fp, code, message, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def url_host_port(url: str) -> str | None:
    """`host:port` of an http(s) URL, None for anything else."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    return f"{(parts.hostname or '').lower()}:{port}" if port and parts.hostname else None


class _Spans:
    """Maps character spans of an expanded text back to the text as given."""

    def __init__(self) -> None:
        self.expanded_ends: list[int] = []  # end of each expansion in the expanded text
        self.regions: list[tuple[int, int, int, int]] = []  # (expanded start, expanded end, original start, end)

    def add(self, expanded_start: int, expanded_end: int, original_start: int, original_end: int) -> None:
        self.expanded_ends.append(expanded_end)
        self.regions.append((expanded_start, expanded_end, original_start, original_end))

    def original(self, start: int, end: int) -> tuple[int, int]:
        if start == end:  # padding and added special tokens have no span
            return start, end
        index = bisect.bisect_right(self.expanded_ends, start)
        if index < len(self.regions) and self.regions[index][0] <= start:
            return self.regions[index][2], self.regions[index][3]
        shift = 0 if index == 0 else self.regions[index - 1][1] - self.regions[index - 1][3]
        return start - shift, end - shift


@contextmanager
def _naming_keyword_arguments(kwargs: dict[str, Any]) -> Iterator[None]:
    """Errors of transformers' own validation of keyword arguments (the tokenizer's, the image processor's) come
    out as a ValueError that names the arguments given, whatever type the validator raised."""
    try:
        yield
    except Exception as error:
        if not kwargs:
            raise
        raise ValueError(f"the keyword arguments {', '.join(sorted(kwargs))} were refused: {error}") from error


def _checked_texts(text: Any) -> list[str]:
    if text is None:
        raise ValueError("text is required: write one placeholder (such as <image>) in it where each input goes.")
    texts = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
    if texts is None or not all(isinstance(item, str) for item in texts):
        raise ValueError(f"text must be a string or a list of strings, got {type(text).__name__}.")
    if not texts:
        raise ValueError("text is an empty list; pass at least one prompt.")
    empty = [index for index, item in enumerate(texts) if not item]
    if empty:
        raise ValueError(f"text holds an empty prompt (index {empty[0]}); every prompt needs at least one token.")
    return texts


def _placeholder_count_error(found: int, given: int, token: str, what: str) -> str:
    return f"The text holds {found} {token} placeholders but {given} {what} were given; write one {token} per item."


def _check_output_size(images_kwargs: dict[str, Any], max_pixels: int) -> None:
    """A ValueError when `size` or `crop_size` asks for images of more than `max_pixels`: the image processor would
    allocate them before anything else could refuse them."""
    for key in ("size", "crop_size"):
        value = images_kwargs.get(key)
        sides = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(side, (int, float)) and side * side > max_pixels for side in sides):
            raise ValueError(
                f"{key}={value!r} asks for images of more than max_image_pixels ({max_pixels:,}) pixels; the tower "
                "reads its own input size, which the saved image processor already holds."
            )


def _token_id(tokenizer: Any, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError(f"The tokenizer has no {token!r} token; add it as a special token first.")
    return token_id


def _expand(text: str, lengths: dict[str, Iterator[int]]) -> tuple[str, _Spans]:
    """`text` with each placeholder repeated as often as the next length of its kind says, and the map back."""
    pieces, spans, position, expanded_length = [], _Spans(), 0, 0
    while True:
        found = [(text.find(token, position), token) for token in lengths if text.find(token, position) >= 0]
        if not found:
            break
        start, token = min(found)
        pieces.append(text[position:start])
        expanded_length += start - position
        repeated = token * next(lengths[token])
        spans.add(expanded_length, expanded_length + len(repeated), start, start + len(token))
        pieces.append(repeated)
        expanded_length += len(repeated)
        position = start + len(token)
    pieces.append(text[position:])
    return "".join(pieces), spans


def _as_list(row: Any) -> list[int]:
    return row.tolist() if hasattr(row, "tolist") else list(row)


def _eight_bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit integer pictures (16-bit PNGs open as mode I;16 or I) scaled to 8 bits instead of clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        return Image.fromarray(np.round(values * 255.0 / peak).clip(0, 255).astype(np.uint8)).convert("RGB")
    return image


def _checked_array(image: Any, rescaling: bool) -> np.ndarray:
    """A numpy/tensor image as an array the image processor reads the same way as the uint8 picture."""
    array = to_numpy(image)
    if array.ndim == 2:
        array = array[..., None]
    channel_axes = [axis for axis in (0, 2) if array.ndim == 3 and array.shape[axis] in (1, 3, 4)]
    if array.ndim != 3 or not channel_axes:
        raise ValueError(
            f"an image array has shape {array.shape}; expected (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4."
        )
    # The channel axis as transformers infers it (the first that can be one), then made the first axis, which its
    # inference reads unambiguously: (1, 1, 3) would otherwise be one channel of 1 x 3 to it, after our reading.
    channel_axis = channel_axes[0]
    if array.shape[channel_axis] == 1:
        array = np.repeat(array, 3, axis=channel_axis)
    array = np.ascontiguousarray(np.moveaxis(array, channel_axis, 0))
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"an image array has dtype {array.dtype}; expected uint8 or floats.")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("an image array holds NaN or infinite values.")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"an image array holds values in [{low:g}, {high:g}]; expected [0, 1] or [0, 255] (normalise with "
                "the processor, not before it)."
            )
        if rescaling and high <= 1.0:  # already rescaled (a ToTensor output): bring it to the 0-255 scale
            array = array.astype(np.float32) * 255.0
    elif array.min() < 0 or array.max() > 255:
        raise ValueError(f"an image array holds integers outside [0, 255] ({array.min()} to {array.max()}).")
    else:
        array = array.astype(np.uint8)
    return array


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


def embedding_length(item: Any) -> int:
    """How many positions an embedding item takes: one per vector (`(dim,)` is one vector)."""
    return 1 if len(item.shape) == 1 else int(item.shape[0])


def _as_embedding(name: str, item: Any) -> Any:
    """An item as a `(n, dim)` tensor (a numpy array where torch is missing); a `(dim,)` vector is one row."""
    tensor = to_numpy(item) if torch is None else torch.as_tensor(item)
    if tensor.ndim not in (1, 2):
        raise ValueError(f"a {name!r} embedding has shape {tuple(tensor.shape)}; expected (dim,) or (n, dim).")
    if not np.isfinite(to_numpy(tensor)).all():
        raise ValueError(f"a {name!r} embedding holds NaN or infinite values.")
    return tensor[None] if tensor.ndim == 1 else tensor


def record_embeddings(record: dict) -> dict[str, Any]:
    """A record's embedding items by modality name (empty where it has none)."""
    return (record.get(RECORD_DATA) or {}).get(RECORD_EMBEDDINGS) or {}


def with_record_embeddings(record: dict, embeddings: dict[str, Any]) -> dict:
    """A copy of `record` holding `embeddings` (by modality name) as its embedding items."""
    return {**record, RECORD_DATA: {**(record.get(RECORD_DATA) or {}), RECORD_EMBEDDINGS: embeddings}}


__all__ = [
    "CHAT_TEMPLATE",
    "IMAGE_LINE",
    "IMAGE_TOKEN",
    "ImageLimits",
    "ImageLoadError",
    "LlavaQwen3Processor",
    "LlavaQwen3ProcessorKwargs",
    "fetch_image_bytes",
    "open_image",
    "record_embeddings",
    "url_host_port",
    "with_record_embeddings",
]
