"""The input half: turning images, text and chat messages into model inputs (a remote-code file)."""

from .processing_llava_qwen3 import (
    CHAT_TEMPLATE,
    IMAGE_LINE,
    IMAGE_TOKEN,
    ImageLimits,
    ImageLoadError,
    LlavaQwen3Processor,
    fetch_image_bytes,
    open_image,
    record_embeddings,
    url_host_port,
    with_record_embeddings,
)

__all__ = [
    "CHAT_TEMPLATE",
    "IMAGE_LINE",
    "IMAGE_TOKEN",
    "ImageLimits",
    "ImageLoadError",
    "LlavaQwen3Processor",
    "fetch_image_bytes",
    "open_image",
    "record_embeddings",
    "url_host_port",
    "with_record_embeddings",
]
