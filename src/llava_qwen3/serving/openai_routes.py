"""OpenAI's API: `POST /v1/chat/completions` (whole answers, or server-sent chunks ending with `data: [DONE]`) and
`GET /v1/models`."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from ..inference import Generation
from .batching import PendingGeneration
from .dependencies import ServiceDependency, authorized, json_content
from .errors import ApiError
from .openai_schema import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ModelCard,
    ModelList,
    Usage,
)
from .service import Service, ensure_answerable
from .settings import generation_settings

router = APIRouter(tags=["OpenAI-compatible"], dependencies=[Depends(authorized)])
DONE = "data: [DONE]\n\n"


@router.get("/v1/models")
async def list_models(service: ServiceDependency) -> ModelList:
    """The one model this server serves."""
    return ModelList(data=[ModelCard(id=service.options.model_name, created=service.created)])


@router.post("/v1/chat/completions", dependencies=[Depends(json_content)], response_model=ChatCompletion)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, service: ServiceDependency
) -> ChatCompletion | StreamingResponse:
    """A chat completion: the whole answer, or with `stream: true` server-sent chunks in OpenAI's format."""
    if body.model is not None and body.model != service.options.model_name:
        raise ApiError(
            404,
            f"model {body.model!r} is not served here; this server serves {service.options.model_name!r}.",
            param="model",
            code="model_not_found",
        )
    prompt = await service.prompts.prompt(await service.prompts.from_openai(body.messages))
    settings = generation_settings(
        service.limits,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        seed=body.seed,
        stop=body.stop,
        max_tokens_param="max_completion_tokens" if body.max_completion_tokens else "max_tokens",
    )
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())  # the completion's time, as OpenAI's; the same in every chunk of a stream
    if not body.stream:
        generation = await service.complete(prompt, settings, request)
        return ChatCompletion(
            id=completion_id,
            created=created,
            model=service.options.model_name,
            choices=[Choice(message=AssistantMessage(content=generation.text), finish_reason=generation.finish_reason)],
            usage=Usage.of(generation),
        )
    deadline = service.deadline()
    pending = service.submit(prompt, settings, stream=True)
    # Until the first event the answer may still be an error with its own status; after it the stream has begun.
    try:
        first = await service.next_event(pending, deadline, request)
        if not isinstance(first, str):
            ensure_answerable(first)
    except BaseException:
        service.batcher.withdraw(pending)
        raise
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    chunks = _chunks(service, pending, first, deadline, completion_id, created, include_usage)
    return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _chunks(
    service: Service,
    pending: PendingGeneration,
    event: str | Generation | Exception,
    deadline: float,
    completion_id: str,
    created: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The server-sent events of one streamed completion, from its first `event` on. A client that leaves cancels
    the request (Starlette cancels this generator); a failure after the start arrives as an error event."""

    def chunk(delta: Delta, finish_reason: str | None = None, counts: Usage | None = None) -> str:
        choices = [] if counts is not None else [ChunkChoice(delta=delta, finish_reason=finish_reason)]
        message = ChatCompletionChunk(
            id=completion_id, created=created, model=service.options.model_name, choices=choices, usage=counts
        )
        return f"data: {message.model_dump_json(exclude_none=True)}\n\n"

    try:
        yield chunk(Delta(role="assistant", content=""))
        while isinstance(event, str):
            yield chunk(Delta(content=event))
            event = await service.next_event(pending, deadline)
        generation = ensure_answerable(event)
        yield chunk(Delta(), finish_reason=generation.finish_reason)
        if include_usage:
            yield chunk(Delta(), counts=Usage.of(generation))
    except ApiError as error:
        yield error.sse()
    finally:
        service.batcher.withdraw(pending)
    yield DONE
