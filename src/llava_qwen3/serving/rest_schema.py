"""The project's own endpoints as pydantic models: `/caption` and `/question` (multipart uploads; their answers),
`/chat` (JSON, multi-turn through a server-side `conversation_id`) and `/health`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .openai_schema import Usage


class Answer(BaseModel):
    """The answer of `/caption` or `/question`."""

    text: str
    finish_reason: Literal["stop", "length"]
    usage: Usage


class ChatRequest(BaseModel):
    """One user turn: its text, the images it adds (base64 data URLs) and, to continue, the conversation's id."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, description="the user's text for this turn")
    images: list[str] = Field(default_factory=list, description="data URLs ('data:image/png;base64,...')")
    conversation_id: str | None = Field(None, description="continue this conversation; absent: start a new one")
    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2, description="0 or absent: greedy")


class ChatResponse(Answer):
    conversation_id: str


class Health(BaseModel):
    status: Literal["ok", "unavailable"] = Field(description="unavailable (with a 503) when the worker has stopped")
    model: str
    model_loaded: bool
    backend: str
    device: str
    queue_depth: int = Field(description="requests waiting for the model")
    decoding: int = Field(description="requests in the batch being decoded")
