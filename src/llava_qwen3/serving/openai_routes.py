"""OpenAI's API: `POST /v1/chat/completions` (whole answers, or server-sent chunks ending with `data: [DONE]`) and
`GET /v1/models`."""

from __future__ import annotations

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
    PromptTokensDetails,
    Usage,
)
from .service import Service, checked
from .settings import generation_settings

router = APIRouter(tags=["OpenAI-compatible"], dependencies=[Depends(authorized)])
DONE = "data: [DONE]\n\n"


def usage(generation: Generation) -> Usage:
    """The token counts of a finished generation."""
    total = generation.prompt_tokens + generation.completion_tokens
    return Usage(
        prompt_tokens=generation.prompt_tokens,
        completion_tokens=generation.completion_tokens,
        total_tokens=total,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=generation.cached_tokens),
    )


@router.get("/v1/models")
async def list_models(server: ServiceDependency) -> ModelList:
    """The one model this server serves."""
    return ModelList(data=[ModelCard(id=server.options.model_name, created=server.created)])


@router.post("/v1/chat/completions", dependencies=[Depends(json_content)], response_model=ChatCompletion)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, server: ServiceDependency
) -> ChatCompletion | StreamingResponse:
    """A chat completion: the whole answer, or with `stream: true` server-sent chunks in OpenAI's format."""
    if body.model is not None and body.model != server.options.model_name:
        raise ApiError(
            404,
            f"model {body.model!r} is not served here; this server serves {server.options.model_name!r}.",
            param="model",
            code="model_not_found",
        )
    prompt = server.prompts.prompt(await server.prompts.from_openai(body.messages))
    settings = generation_settings(
        server.limits,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        seed=body.seed,
        stop=body.stop,
        max_tokens_param="max_completion_tokens" if body.max_completion_tokens else "max_tokens",
    )
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if not body.stream:
        generation = await server.complete(prompt, settings, request)
        return ChatCompletion(
            id=completion_id,
            created=server.created,
            model=server.options.model_name,
            choices=[Choice(message=AssistantMessage(content=generation.text), finish_reason=generation.finish_reason)],
            usage=usage(generation),
        )
    deadline = server.deadline()
    pending = server.submit(prompt, settings, stream=True)
    # Until the first event the answer may still be an error with its own status; after it the stream has begun.
    try:
        first = await server.next_event(pending, deadline, request)
        if not isinstance(first, str):
            checked(first)
    except BaseException:
        server.batcher.withdraw(pending)
        raise
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    chunks = _chunks(server, pending, first, deadline, completion_id, include_usage)
    return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _chunks(
    server: Service,
    pending: PendingGeneration,
    event: str | Generation | Exception,
    deadline: float,
    completion_id: str,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The server-sent events of one streamed completion, from its first `event` on. A client that leaves cancels
    the request (Starlette cancels this generator); a failure after the start arrives as an error event."""

    def chunk(delta: Delta, finish_reason: str | None = None, counts: Usage | None = None) -> str:
        choices = [] if counts is not None else [ChunkChoice(delta=delta, finish_reason=finish_reason)]
        message = ChatCompletionChunk(
            id=completion_id, created=server.created, model=server.options.model_name, choices=choices, usage=counts
        )
        return f"data: {message.model_dump_json(exclude_none=True)}\n\n"

    try:
        yield chunk(Delta(role="assistant", content=""))
        while isinstance(event, str):
            yield chunk(Delta(content=event))
            event = await server.next_event(pending, deadline)
        generation = checked(event)
        yield chunk(Delta(), finish_reason=generation.finish_reason)
        if include_usage:
            yield chunk(Delta(), counts=usage(generation))
    except ApiError as error:
        yield error.sse()
    finally:
        server.batcher.withdraw(pending)
    yield DONE
