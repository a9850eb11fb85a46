"""Images from the outside world, checked before anything costly is done with them.

Every image arrives as bytes (an upload, a base64 data URL, or a fetch from an allowed host) and is refused with a 4xx
`ApiError` when it is too many bytes, declares too many pixels in its header (checked before decoding, beside Pillow's
own decompression-bomb guard), is not one of the formats read here, or does not decode. Fetching and decoding are the
processor's own loader (`fetch_image_bytes`, `open_image`: the one implementation), run here within the server's
limits; what is the server's alone is the policy around it: which hosts may be fetched from, which formats are opened
for strangers, and the HTTP status and code of each refusal. URL strings are never passed on to the processor.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from urllib.parse import urlsplit

from PIL import Image

from ..processing import ImageLimits, ImageLoadError, fetch_image_bytes, open_image, url_host_port
from .errors import ApiError
from .limits import ServerLimits

# Formats with plain decoders; others Pillow knows (EPS runs Ghostscript, for one) are not opened for strangers.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
MAX_REDIRECTS = 3
# The HTTP status and error code of each refusal of the loader (`ImageLoadError.reason`).
REFUSALS = {
    "too_many_bytes": (413, "upload_too_large"),
    "too_many_pixels": (413, "image_too_large"),
    "not_an_image": (400, "invalid_image"),
    "corrupt": (400, "invalid_image"),
    "fetch_failed": (400, "image_fetch_failed"),
    "redirect": (400, "redirect"),
}


def image_limits(limits: ServerLimits) -> ImageLimits:
    """The loader's bounds under the server's limits."""
    return ImageLimits(
        max_pixels=limits.max_image_pixels,
        max_bytes=limits.max_upload_bytes,
        timeout=limits.remote_image_timeout_s,
        max_redirects=MAX_REDIRECTS,
        formats=IMAGE_FORMATS,
    )


def _refusal(error: ImageLoadError, param: str) -> ApiError:
    status, code = REFUSALS[error.reason]
    return ApiError(status, str(error), param=param, code=code)


def decode_image(data: bytes, limits: ServerLimits, param: str) -> Image.Image:
    """The RGB image encoded in `data`, or a 4xx `ApiError` naming `param`: too many bytes or declared pixels (413),
    or bytes that are not a complete image in one of `IMAGE_FORMATS` (400)."""
    check_size(len(data), limits, param)
    try:
        return open_image(data, param, image_limits(limits)).convert("RGB")
    except ImageLoadError as error:
        raise _refusal(error, param) from None


def check_size(size: int, limits: ServerLimits, param: str) -> None:
    """A 413 `ApiError` when `size` bytes exceed the upload limit."""
    if size > limits.max_upload_bytes:
        raise ApiError(
            413,
            f"{param} is {size} bytes; the limit is {limits.max_upload_bytes} bytes (max_upload_bytes).",
            param=param,
            code="upload_too_large",
        )


def decode_base64(payload: str, limits: ServerLimits, param: str) -> bytes:
    """The bytes of a base64 string, refused before decoding when they would exceed the upload limit."""
    check_size(len(payload) // 4 * 3, limits, param)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ApiError(400, f"{param} is not valid base64: {error}.", param=param, code="invalid_base64") from None


def data_url_bytes(url: str, limits: ServerLimits, param: str) -> bytes:
    """The bytes of a `data:image/...;base64,...` URL."""
    header, comma, payload = url.partition(",")
    media_type, _, encoding = header[len("data:") :].partition(";")
    if not comma or encoding != "base64" or not media_type.startswith("image/"):
        raise ApiError(
            400,
            f"{param} must be a base64 data URL of an image, 'data:image/png;base64,...'; got one starting "
            f"{url[:40]!r}.",
            param=param,
            code="invalid_image_url",
        )
    return decode_base64(payload, limits, param)


async def image_from_url(url: str, limits: ServerLimits, param: str) -> Image.Image:
    """The image of a data URL, or of an http(s) URL on an allowed host; anything else is refused."""
    if url.startswith("data:"):
        data = data_url_bytes(url, limits, param)
    else:
        data = await fetch_allowed_image(url, limits, param)
    return await asyncio.to_thread(decode_image, data, limits, param)


def _allowed_host(url: str, limits: ServerLimits, param: str) -> None:
    """Nothing for an http(s) URL whose host (or host:port) is on the allow-list, else a 400."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ApiError(
            400,
            f"{param}: {parts.scheme or 'a'}: URL is not accepted; send the image as a data URL "
            "('data:image/png;base64,...') or an http(s) URL on the server's allowed hosts.",
            param=param,
            code="invalid_image_url",
        )
    host_port = url_host_port(url)
    if host_port is None:
        raise ApiError(400, f"{param} has no valid host and port: {url[:100]!r}.", param, "invalid_image_url")
    host = host_port.rsplit(":", 1)[0]
    if host not in limits.allowed_image_hosts and host_port not in limits.allowed_image_hosts:
        allowed = ", ".join(limits.allowed_image_hosts) or "none: send images as data URLs"
        raise ApiError(
            400,
            f"{param}: images are not fetched from {host_port}; allowed hosts (--allow-image-host): {allowed}.",
            param=param,
            code="image_host_not_allowed",
        )


async def fetch_allowed_image(url: str, limits: ServerLimits, param: str) -> bytes:
    """The body of an http(s) URL on an allowed host, fetched by the loader within the server's limits (redirects
    only within the same host and port)."""
    _allowed_host(url, limits, param)
    try:
        return await asyncio.to_thread(fetch_image_bytes, url, image_limits(limits), param)
    except ImageLoadError as error:
        raise _refusal(error, param) from None
