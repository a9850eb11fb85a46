"""FastAPI dependencies the routes share: the app's `Service`, the API key check and the content-type checks.

They are `async` although they do not wait: FastAPI runs plain functions in its thread pool, a hop per dependency
per request that costs the event loop more than the checks themselves."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request

from .errors import ApiError
from .service import Service


async def service(request: Request) -> Service:
    """The app's `Service`."""
    return request.app.state.service


ServiceDependency = Annotated[Service, Depends(service)]


async def authorized(request: Request) -> None:
    """Refuses (401) a request without the server's API key as `Authorization: Bearer KEY`, when it has one; the
    comparison takes the same time wherever the keys differ (digests are compared, so not even the length shows)."""
    key = request.app.state.service.options.api_key
    if key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    matches = hmac.compare_digest(_digest(given.strip()), _digest(key))
    if scheme.lower() != "bearer" or not matches:
        raise ApiError(
            401,
            "a valid API key is required: send it as 'Authorization: Bearer KEY'.",
            param="authorization",
            code="invalid_api_key",
        )


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def json_content(request: Request) -> None:
    """Refuses (415) a body that is not declared as JSON."""
    if _media_type(request) != "application/json":
        raise ApiError(
            415,
            f"the body must be JSON with 'Content-Type: application/json', got {_media_type(request) or 'none'!r}.",
            param="content-type",
            code="unsupported_media_type",
        )


async def multipart_content(request: Request) -> None:
    """Refuses (415) a body that is not a multipart form."""
    if _media_type(request) != "multipart/form-data":
        raise ApiError(
            415,
            "the body must be a multipart form ('Content-Type: multipart/form-data') with the image as a file field; "
            f"got {_media_type(request) or 'none'!r}.",
            param="content-type",
            code="unsupported_media_type",
        )
