"""Images from the outside world, checked before anything costly is done with them.

Every image arrives as bytes (an upload, a base64 data URL, or a fetch from an allowed host) and is refused with a 4xx
`ApiError` when it is too many bytes, declares too many pixels in its header (checked before decoding, beside Pillow's
own decompression-bomb guard), is not one of the formats read here, or does not decode. The server decodes images
itself: URL strings are never passed on to the processor, whose own loading bounds size and time but fetches from any
host (the server fetches only from its allowed hosts, within its own limits).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from urllib.parse import urljoin, urlsplit

import httpx
from PIL import Image

from .errors import ApiError
from .limits import ServerLimits

# Formats with plain decoders; others Pillow knows (EPS runs Ghostscript, for one) are not opened for strangers.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
MAX_REDIRECTS = 3


def decode_image(data: bytes, limits: ServerLimits, param: str) -> Image.Image:
    """The RGB image encoded in `data`, or a 4xx `ApiError` naming `param`: too many bytes or declared pixels (413),
    or bytes that are not a complete image in one of `IMAGE_FORMATS` (400)."""
    check_size(len(data), limits, param)
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # reads the header only
    except Image.DecompressionBombError as error:  # Pillow's own guard, for sizes far past any sane limit
        raise _too_many_pixels(param, limits, str(error).rstrip(".")) from None
    except Image.UnidentifiedImageError:
        raise ApiError(
            400,
            f"{param} is not an image: its bytes are none of {', '.join(IMAGE_FORMATS)}.",
            param=param,
            code="invalid_image",
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ApiError(
            400,
            f"{param} is not an image this server reads ({', '.join(IMAGE_FORMATS)}): {error}.",
            param=param,
            code="invalid_image",
        ) from None
    width, height = image.size
    if width * height > limits.max_image_pixels:
        raise _too_many_pixels(param, limits, f"it declares {width}x{height} = {width * height} pixels")
    try:
        image.load()
        return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ApiError(
            400, f"{param} could not be decoded (truncated or corrupt {image.format}): {error}.", param, "invalid_image"
        ) from None


def _too_many_pixels(param: str, limits: ServerLimits, detail: str) -> ApiError:
    return ApiError(
        413,
        f"{param} is too large to decode: {detail}; the limit is {limits.max_image_pixels} pixels (max_image_pixels).",
        param=param,
        code="image_too_large",
    )


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
        data = await fetch_image_bytes(url, limits, param)
    return await asyncio.to_thread(decode_image, data, limits, param)


def _host_port(url: str) -> str | None:
    """`host:port` of an http(s) URL, None for anything else."""
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    return f"{(parts.hostname or '').lower()}:{port}" if port and parts.hostname else None


def _allowed_host(url: str, limits: ServerLimits, param: str) -> str:
    """`host:port` of an http(s) URL whose host is on the allow-list, else a 400."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ApiError(
            400,
            f"{param}: {parts.scheme or 'a'}: URL is not accepted; send the image as a data URL "
            "('data:image/png;base64,...') or an http(s) URL on the server's allowed hosts.",
            param=param,
            code="invalid_image_url",
        )
    host_port = _host_port(url)
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
    return host_port


async def fetch_image_bytes(url: str, limits: ServerLimits, param: str) -> bytes:
    """The body of an http(s) URL on an allowed host, read up to the upload limit; redirects are followed only
    within the same host and port."""
    host = _allowed_host(url, limits, param)
    # trust_env=False: no proxy from the environment sits between the server and the allowed host.
    async with httpx.AsyncClient(timeout=limits.remote_image_timeout_s, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                async with client.stream("GET", url, follow_redirects=False) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        if _host_port(url) != host:
                            raise ApiError(
                                400, f"{param} redirects to another host ({url[:100]}); refused.", param, "redirect"
                            )
                        continue
                    if response.status_code != 200:
                        raise ApiError(
                            400, f"fetching {param} gave HTTP {response.status_code}.", param, "image_fetch_failed"
                        )
                    declared = response.headers.get("content-length", "")
                    check_size(int(declared) if declared.isdigit() else 0, limits, param)
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        check_size(len(body), limits, param)
                    return bytes(body)
            except httpx.HTTPError as error:
                raise ApiError(400, f"fetching {param} failed: {error!r}.", param, "image_fetch_failed") from None
    raise ApiError(400, f"{param} redirects more than {MAX_REDIRECTS} times; refused.", param, "redirect")
