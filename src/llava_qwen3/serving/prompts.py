"""Chat messages -> the record a backend generates for, within the limits.

Messages are rendered with the processor's own chat template (`apply_chat_template(messages,
add_generation_prompt=True)`): an image part becomes an `{"type": "image"}` item and an `input_embedding` part an
`{"type": "embedding"}` item, each in its place among the texts. Images are decoded here (see `images`), embeddings
read as float32 arrays, and the record is encoded once (`InferenceBackend.encode`): its length is checked against the
limit from that encoding, and the worker generates from it without processing the record again.
"""

from __future__ import annotations

import asyncio
import copy
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from PIL import Image
from transformers import BatchFeature

from ..inference.backend import INPUT_ERRORS, InferenceBackend, prompt_length
from ..processing import with_record_embeddings
from .errors import ApiError
from .images import decode_base64, image_from_url
from .limits import ServerLimits
from .openai_schema import ChatMessage, EmbeddingPart, ImagePart


@dataclass
class Conversation:
    """Messages in the chat template's form and the images their `{"type": "image"}` items stand for, in order."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    embeddings: dict[str, list[np.ndarray]] = field(default_factory=dict)


@dataclass
class Prompt:
    """A record for the inference interface, checked against the server's limits, and its model inputs (made once,
    here; the backend does not process the record again)."""

    record: dict[str, Any]
    encoded: BatchFeature


class PromptBuilder:
    """Turns conversations into encoded records with the backend's processing, refusing what exceeds the limits."""

    def __init__(self, backend: InferenceBackend, limits: ServerLimits) -> None:
        self.backend = backend
        # A copy: the worker thread decodes with the backend's processor, and a fast tokenizer used from two threads
        # at once fails ("Already borrowed"). One thread encodes with it, off the event loop.
        self.processor = copy.deepcopy(backend.processor)
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prompt-encoder")
        self.limits = limits

    def close(self) -> None:
        """Ends the encoding thread (at the app's shutdown; a prompt still being encoded finishes first)."""
        self._encoder.shutdown(wait=True)

    def check_image_count(self, count: int, param: str = "messages") -> None:
        """A 400 when a request holds more images than allowed (checked before any image is decoded)."""
        if count > self.limits.max_images:
            raise ApiError(
                400,
                f"the request holds {count} images; the limit is {self.limits.max_images} per request (max_images).",
                param=param,
                code="too_many_images",
            )

    async def from_openai(self, messages: list[ChatMessage]) -> Conversation:
        """The conversation of OpenAI chat messages, its images fetched and decoded and its embeddings read."""
        parts = [part for message in messages if not isinstance(message.content, str) for part in message.content]
        self.check_image_count(sum(isinstance(part, ImagePart) for part in parts))
        conversation = Conversation()
        for index, message in enumerate(messages):
            if isinstance(message.content, str):
                conversation.messages.append({"role": message.role, "content": message.content})
                continue
            content = []
            for number, part in enumerate(message.content):
                param = f"messages.{index}.content.{number}"
                if isinstance(part, ImagePart):
                    image = await image_from_url(part.image_url.url, self.limits, f"{param}.image_url.url")
                    conversation.images.append(image)
                    content.append({"type": "image"})
                elif isinstance(part, EmbeddingPart):
                    embedding = await asyncio.to_thread(self._embedding, part, f"{param}.data")
                    conversation.embeddings.setdefault(part.modality, []).append(embedding)
                    token = self.processor.modality_tokens[part.modality]
                    content.append({"type": "embedding", "modality": part.modality, "token": token})
                else:
                    content.append({"type": "text", "text": part.text})
            conversation.messages.append({"role": message.role, "content": content})
        return conversation

    def _embedding(self, part: EmbeddingPart, param: str) -> np.ndarray:
        """The float32 `(dim,)` or `(n, dim)` array of an `input_embedding` part."""
        known = self.processor.modality_tokens
        if part.modality not in known:
            raise ApiError(
                400,
                f"modality {part.modality!r} is unknown to this model; it has: {', '.join(known) or 'none'}.",
                param=param.removesuffix(".data") + ".modality",
                code="unknown_modality",
            )
        data = decode_base64(part.data, self.limits, param)
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise ApiError(
                400, f"{param} is not a .npy file: {error}.", param=param, code="invalid_embedding"
            ) from None
        if not np.issubdtype(array.dtype, np.floating) or array.ndim not in (1, 2) or array.size == 0:
            raise ApiError(
                400,
                f"{param} holds a {array.dtype} array of shape {array.shape}; expected floats of shape (dim,) or "
                "(n, dim).",
                param=param,
                code="invalid_embedding",
            )
        if not np.isfinite(array).all():
            raise ApiError(400, f"{param} holds NaN or infinite values.", param=param, code="invalid_embedding")
        return array.astype(np.float32)

    async def prompt(self, conversation: Conversation) -> Prompt:
        """The record of `conversation` with the generation prompt appended, encoded once for the backend; a 400 when
        it cannot be processed or is too long."""
        self.check_image_count(len(conversation.images))
        try:
            text = self.processor.apply_chat_template(conversation.messages, add_generation_prompt=True)
        except Exception as error:  # the template's own refusal of a message it cannot render
            raise ApiError(400, f"the messages cannot be rendered: {error}.", param="messages") from None
        record: dict[str, Any] = {"text": text, "images": list(conversation.images)}
        if conversation.embeddings:
            record = with_record_embeddings(record, dict(conversation.embeddings))
        try:
            encoded = await asyncio.get_running_loop().run_in_executor(
                self._encoder, partial(self.backend.encode, record, self.processor)
            )
        except INPUT_ERRORS as error:
            raise ApiError(400, str(error), param="messages", code="bad_input") from None
        tokens = prompt_length(encoded)
        if tokens > self.limits.max_prompt_tokens:
            raise ApiError(
                400,
                f"the prompt is {tokens} tokens (each image counts {self.processor.image_seq_length}); the limit is "
                f"{self.limits.max_prompt_tokens} (max_prompt_tokens).",
                param="messages",
                code="prompt_too_long",
            )
        return Prompt(record, encoded)
