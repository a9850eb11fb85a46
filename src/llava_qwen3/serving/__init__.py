"""Serving: the model over HTTP. A FastAPI app with the project's REST endpoints (`/caption`, `/question`, `/chat`),
OpenAI's chat completions API (streamed or whole), `/health`, `/metrics` and a web page, on one `InferenceBackend`
with dynamic batching and limits on everything a request may ask. `llava-qwen3-serve` runs it with uvicorn.

Needs the `serve` extra (FastAPI, uvicorn, prometheus_client, python-multipart, httpx).
"""

from .app import create_app
from .limits import ServerLimits
from .service import ServerOptions

__all__ = ["ServerLimits", "ServerOptions", "create_app"]
