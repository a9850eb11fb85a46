"""Every limit the server enforces, with its default, in one dataclass that the command line and the app share.

Each field's `help` metadata is the command line's help text; `llava-qwen3-serve --max-image-pixels N` sets the field
`max_image_pixels`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

MiB = 2**20
ZERO_ALLOWED = ("batch_wait_ms",)  # no wait: a batch is whatever is queued when the worker looks


def _limit(default: float, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for and how much the server holds at once (see docs/serving.md for the table)."""

    max_request_bytes: int = _limit(32 * MiB, "bytes of one request body (JSON or multipart); more is refused (413)")
    max_upload_bytes: int = _limit(
        8 * MiB, "bytes of one encoded image or embedding (an upload, a data URL or a fetched URL) (413)"
    )
    max_image_pixels: int = _limit(
        4096 * 4096, "pixels (width x height) one image may declare; checked from its header before decoding (413)"
    )
    max_images: int = _limit(8, "images in one request, a /chat conversation's earlier turns included (400)")
    max_prompt_tokens: int = _limit(
        2048, "prompt tokens of one request, each image's placeholder tokens included (400)"
    )
    max_tokens: int = _limit(512, "the largest max_tokens / max_new_tokens a request may ask for (400)")
    default_max_tokens: int = _limit(128, "max_tokens of a request that does not say")
    max_queue: int = _limit(128, "requests waiting for the model; a request beyond it is refused with 429")
    max_batch_size: int = _limit(32, "requests decoded together in one batch")
    batch_wait_ms: float = _limit(5.0, "how long an idle worker waits for more requests to join a new batch")
    request_timeout_s: float = _limit(120.0, "seconds a request may take, queueing included; then it stops (504)")
    max_conversations: int = _limit(1024, "conversations /chat keeps (least recently used dropped first)")
    conversation_ttl_s: float = _limit(3600.0, "seconds an unused /chat conversation is kept")
    conversation_store_bytes: int = _limit(
        256 * MiB, "bytes of decoded images and text all kept conversations may hold (least recently used dropped)"
    )
    remote_image_timeout_s: float = _limit(10.0, "seconds to fetch an image URL from an allowed host")
    allowed_image_hosts: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "a host (or host:port) whose http(s) image URLs may be fetched; repeat for more. None by default: "
            "only data URLs and uploads are read"
        },
    )

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "allowed_image_hosts":
                hosts = (value,) if isinstance(value, str) else tuple(value)
                if not all(isinstance(host, str) and host and "/" not in host for host in hosts):
                    raise ValueError(f"allowed_image_hosts must be host names (or host:port), got {value!r}.")
                object.__setattr__(self, item.name, tuple(host.lower() for host in hosts))
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{item.name} must be a number, got {value!r}.")
            elif value < 0 or (value == 0 and item.name not in ZERO_ALLOWED):
                raise ValueError(f"{item.name} must be positive, got {value!r}.")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(
                f"default_max_tokens ({self.default_max_tokens}) must not exceed max_tokens ({self.max_tokens})."
            )
        if self.max_upload_bytes > self.max_request_bytes:
            raise ValueError(
                f"max_upload_bytes ({self.max_upload_bytes}) must not exceed max_request_bytes "
                f"({self.max_request_bytes}): an upload travels inside a request."
            )
