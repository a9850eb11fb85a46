"""OpenAI's chat completions API as pydantic models: the request (with the content parts this server reads), the
response, the streamed chunks and the model list. FastAPI validates requests with them and draws the OpenAPI schema
from them.

Content parts: `text`, `image_url` (a base64 data URL, or an http(s) URL on the server's allowed hosts) and this
server's `input_embedding`, `{"type": "input_embedding", "modality": "m1", "data": <base64 of a float .npy file>}`,
which fills the modality's placeholder with precomputed embeddings (one row per token).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from ..inference import Generation

MAX_STOP_STRINGS = 4  # as OpenAI


class _Strict(BaseModel):
    """Refuses unknown fields, so a misspelt or unsupported parameter is named instead of silently ignored."""

    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageUrl(_Strict):
    url: str = Field(description="a data URL ('data:image/png;base64,...') or an http(s) URL on an allowed host")
    detail: Literal["auto", "low", "high"] | None = Field(None, description="accepted and ignored")


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


class EmbeddingPart(_Strict):
    type: Literal["input_embedding"]
    modality: str = Field(description="the modality's name in the model's config, e.g. 'm1'", pattern=r"^\w+$")
    data: str = Field(description="base64 of a .npy file holding a float (dim,) vector or (n, dim) sequence")


ContentPart = Annotated[TextPart | ImagePart | EmbeddingPart, Field(discriminator="type")]


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = Field(None, description="accepted and ignored")


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    """`POST /v1/chat/completions`. Decoding is greedy unless `temperature` > 0 (then `top_p`, `top_k` and `seed`
    shape the draw)."""

    model: str | None = Field(None, description="the served model's name (see /v1/models); may be left out")
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="takes precedence over max_tokens")
    temperature: float | None = Field(None, ge=0, le=2, description="0 or absent: greedy")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, description="an extension to OpenAI's API; 0 keeps every token")
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, description="must be 1")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="accepted and ignored")

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError(f"n must be 1 (one choice per request), got {n}")
        return n

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: str | list[str] | None) -> str | list[str] | None:
        strings = [stop] if isinstance(stop, str) else stop or []
        if len(strings) > MAX_STOP_STRINGS or not all(strings):
            raise ValueError(f"stop must be up to {MAX_STOP_STRINGS} non-empty strings")
        return stop


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(0, description="prompt tokens read from the prefix cache instead of computed")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)

    @classmethod
    def of(cls, generation: Generation) -> Usage:
        """The token counts of a finished generation."""
        return cls(
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            total_tokens=generation.prompt_tokens + generation.completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=generation.cached_tokens),
        )


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llava-qwen3"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
