"""The project's own endpoints: `POST /caption` and `POST /question` (an uploaded image and form fields) and
`POST /chat` (JSON; images as data URLs; multi-turn through a `conversation_id` the server keeps)."""

from __future__ import annotations

import asyncio
import copy
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from PIL import Image

from .dependencies import ServiceDependency, authorized, json_content, multipart_content
from .errors import ApiError
from .images import check_size, data_url_bytes, decode_image
from .openai_schema import Usage
from .prompts import Conversation
from .rest_schema import Answer, ChatRequest, ChatResponse
from .service import Service
from .settings import generation_settings

router = APIRouter(tags=["REST"], dependencies=[Depends(authorized)])


async def _uploaded_image(upload: UploadFile, service: Service) -> Image.Image:
    data = await upload.read(service.limits.max_upload_bytes + 1)
    check_size(len(data), service.limits, "image")
    return await asyncio.to_thread(decode_image, data, service.limits, "image")


async def _answer(
    service: Service,
    request: Request,
    upload: UploadFile,
    question: str,
    max_new_tokens: int | None,
    temperature: float,
) -> Answer:
    image = await _uploaded_image(upload, service)
    content = [{"type": "image"}, {"type": "text", "text": question}]
    prompt = await service.prompts.prompt(Conversation([{"role": "user", "content": content}], [image]))
    settings = generation_settings(
        service.limits, max_tokens=max_new_tokens, temperature=temperature, max_tokens_param="max_new_tokens"
    )
    generation = await service.complete(prompt, settings, request)
    return Answer(text=generation.text, finish_reason=generation.finish_reason, usage=Usage.of(generation))


@router.post("/caption", dependencies=[Depends(multipart_content)])
async def caption(
    request: Request,
    service: ServiceDependency,
    image: Annotated[UploadFile, File(description="a PNG, JPEG, WebP, GIF or BMP file")],
    max_new_tokens: Annotated[int | None, Form(ge=1)] = None,
    temperature: Annotated[float, Form(ge=0, le=2, description="0: greedy")] = 0.0,
) -> Answer:
    """A caption of the uploaded image (the model is asked the server's caption prompt)."""
    return await _answer(service, request, image, service.options.caption_prompt, max_new_tokens, temperature)


@router.post("/question", dependencies=[Depends(multipart_content)])
async def question(
    request: Request,
    service: ServiceDependency,
    image: Annotated[UploadFile, File(description="a PNG, JPEG, WebP, GIF or BMP file")],
    question: Annotated[str, Form(min_length=1)],
    max_new_tokens: Annotated[int | None, Form(ge=1)] = None,
    temperature: Annotated[float, Form(ge=0, le=2, description="0: greedy")] = 0.0,
) -> Answer:
    """The answer to a question about the uploaded image."""
    return await _answer(service, request, image, question, max_new_tokens, temperature)


@router.post("/chat", dependencies=[Depends(json_content)])
async def chat(body: ChatRequest, request: Request, service: ServiceDependency) -> ChatResponse:
    """One turn of a conversation the server keeps: a new one without `conversation_id`, else that one continued
    (a 404 when it is unknown or has expired). The turn is kept only when it is answered."""
    if body.conversation_id is None:
        earlier = Conversation()
    else:
        earlier = service.conversations.get(body.conversation_id)
        if earlier is None:
            raise ApiError(
                404,
                f"conversation {body.conversation_id!r} is unknown or has expired; start a new one without "
                "conversation_id.",
                param="conversation_id",
                code="conversation_not_found",
            )
    service.prompts.check_image_count(len(earlier.images) + len(body.images), param="images")
    images = []
    for index, url in enumerate(body.images):
        data = data_url_bytes(url, service.limits, f"images.{index}")
        images.append(await asyncio.to_thread(decode_image, data, service.limits, f"images.{index}"))
    content = [{"type": "image"}] * len(images) + [{"type": "text", "text": body.message}]
    conversation = Conversation(
        [*copy.deepcopy(earlier.messages), {"role": "user", "content": content}], [*earlier.images, *images]
    )
    prompt = await service.prompts.prompt(conversation)
    settings = generation_settings(
        service.limits, max_tokens=body.max_new_tokens, temperature=body.temperature, max_tokens_param="max_new_tokens"
    )
    generation = await service.complete(prompt, settings, request)
    conversation.messages.append({"role": "assistant", "content": [{"type": "text", "text": generation.text}]})
    conversation_id = service.conversations.put(conversation, body.conversation_id)
    return ChatResponse(
        text=generation.text,
        finish_reason=generation.finish_reason,
        usage=Usage.of(generation),
        conversation_id=conversation_id,
    )
