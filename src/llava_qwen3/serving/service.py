"""What every endpoint shares: the backend behind the batching queue, the prompt builder, the conversation store, the
metrics, and the waiting for a request's answer with its timeout and its client's departure in mind."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from fastapi import Request

from ..inference import Generation, GenerationSettings, InferenceBackend
from ..record_sources import DEFAULT_CAPTION_PROMPT
from .batching import Batcher, PendingGeneration, QueueFullError
from .conversations import ConversationStore
from .errors import ApiError
from .limits import ServerLimits
from .metrics import ServerMetrics
from .prompts import Prompt, PromptBuilder

DISCONNECT_POLL_S = 0.25  # how often a waiting request looks whether its client is still there


class ClientDisconnected(Exception):
    """The client left before its answer was ready; its generation has been cancelled."""


@dataclass(frozen=True)
class ServerOptions:
    """What the server is besides its limits: the name it serves the model under, the optional API key, and the
    prompt `/caption` asks."""

    model_name: str
    api_key: str | None = None
    caption_prompt: str = DEFAULT_CAPTION_PROMPT  # what caption records are trained with, unless they name a prompt


class Service:
    """The server's state, built once per app."""

    def __init__(self, backend: InferenceBackend, limits: ServerLimits, options: ServerOptions) -> None:
        self.backend = backend
        self.limits = limits
        self.options = options
        self.created = int(time.time())  # /v1/models' `created`: when this server loaded the model
        self.metrics = ServerMetrics()
        self.batcher = Batcher(backend, limits, self.metrics)
        self.prompts = PromptBuilder(backend, limits)
        self.conversations = ConversationStore(
            limits.max_conversations, limits.conversation_ttl_s, limits.conversation_store_bytes
        )

    def submit(self, prompt: Prompt, settings: GenerationSettings, stream: bool = False) -> PendingGeneration:
        """Queues a request; a 429 when the queue is full."""
        try:
            return self.batcher.submit(prompt, settings, stream)
        except QueueFullError:
            raise ApiError(
                429,
                f"the server is busy: {self.limits.max_queue} requests are waiting (max_queue); retry shortly.",
                code="queue_full",
            ) from None

    def deadline(self) -> float:
        """The event-loop time by which a request submitted now must be answered."""
        return asyncio.get_running_loop().time() + self.limits.request_timeout_s

    async def next_event(
        self, pending: PendingGeneration, deadline: float, request: Request | None = None
    ) -> str | Generation | Exception:
        """The request's next event (a text piece, its `Generation`, or the error that failed its batch). Past the
        deadline the request is cancelled with a 504; with `request`, a client that has left cancels it too (a
        `ClientDisconnected`)."""
        loop = asyncio.get_running_loop()
        getter = asyncio.ensure_future(pending.events.get())
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self.batcher.withdraw(pending)
                    raise ApiError(
                        504,
                        f"the request took longer than {self.limits.request_timeout_s} s (request_timeout_s) and was "
                        "stopped.",
                        code="timeout",
                    )
                done, _ = await asyncio.wait({getter}, timeout=min(remaining, DISCONNECT_POLL_S))
                if done:
                    return getter.result()
                if request is not None and await request.is_disconnected():
                    self.batcher.withdraw(pending)
                    raise ClientDisconnected
        finally:
            getter.cancel()

    async def complete(self, prompt: Prompt, settings: GenerationSettings, request: Request) -> Generation:
        """The finished generation of one request (see `ensure_answerable` for how failures are answered)."""
        deadline = self.deadline()
        pending = self.submit(prompt, settings)
        try:
            while True:
                event = await self.next_event(pending, deadline, request)
                if not isinstance(event, str):
                    return ensure_answerable(event)
        finally:
            self.batcher.withdraw(pending)  # nothing to do once it has finished; stops it when this task was cancelled


def ensure_answerable(event: Generation | Exception) -> Generation:
    """The generation when it may be answered; else raises the `ApiError` to answer instead: a request the backend
    refused is a 400 with its reason, an engine fault a 500, a request cancelled by the server's shutdown a 503."""
    if isinstance(event, Exception):
        raise ApiError(500, f"the model failed on this request's batch: {event!r}.", code="engine_error")
    if event.finish_reason == "error":
        raise ApiError(400, event.error or "the request could not be processed.", param="messages", code="bad_input")
    if event.finish_reason == "cancelled":
        raise ApiError(503, "the server is shutting down; the request was cancelled.", code="shutting_down")
    return event
