"""The browser demo beside the server: `llava-qwen3-serve --browser-demo PATH` serves at `/browser/` either a page
folder written by `llava-qwen3-browser-demo`, or, given an ONNX export folder, the same page assembled in place: the
page's files from the package, the library files from the cache (fetched from the npm registry the first time), the
model's files from the export folder itself (nothing copied) and its demo.json made at start.

Every answer carries the cross-origin isolation headers (COOP `same-origin`, COEP `require-corp`): browsers give
SharedArrayBuffer, and so onnxruntime-web's WASM threads, only to isolated pages, and everything the page loads is on
this origin, so they cost it nothing. The page runs the model in the browser; the server only sends files.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from ..browser import is_page_folder
from ..browser.page import (
    DEFAULT_MAX_NEW_TOKENS,
    MODEL_FOLDER,
    VENDOR_FOLDER,
    choose_dtype,
    page_settings,
    vendor_folder,
)
from ..inference.onnx_layout import check_export_folder

BROWSER_PATH = "/browser"
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
# Module scripts must come as JavaScript, and WASM compiles while it streams only as application/wasm; some systems'
# MIME tables lack these.
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/wasm", ".wasm")


class IsolatedStaticFiles(StaticFiles):
    """Starlette's static files, each answer with the cross-origin isolation headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(ISOLATION_HEADERS)
        return response


def _page_for_export(export: Path) -> Starlette:
    """The page over an export folder, without copying it: the layout of a written page, from three places."""
    check_export_folder(export)
    settings = page_settings(export, choose_dtype(export, None), DEFAULT_MAX_NEW_TOKENS, export.resolve().name)

    async def demo_settings(request: Request) -> JSONResponse:
        return JSONResponse(settings, headers=ISOLATION_HEADERS)

    return Starlette(
        routes=[
            Route("/demo.json", demo_settings),
            Mount(f"/{VENDOR_FOLDER}", IsolatedStaticFiles(directory=vendor_folder())),
            Mount(f"/{MODEL_FOLDER}", IsolatedStaticFiles(directory=export)),
            Mount("/", IsolatedStaticFiles(packages=[("llava_qwen3.browser", "static")], html=True)),
        ]
    )


def mount_browser_demo(app: FastAPI, path: str | Path) -> None:
    """Serves the page for `path` (a written page folder, or an ONNX export folder) at `BROWSER_PATH`/ on `app`."""
    path = Path(path)
    if is_page_folder(path):
        page = IsolatedStaticFiles(directory=path, html=True)
    elif (path / "config.json").is_file() and (path / "onnx").is_dir():
        page = _page_for_export(path)
    else:
        raise ValueError(
            f"--browser-demo {path} is neither a page folder written by llava-qwen3-browser-demo nor an ONNX export "
            "folder (llava-qwen3-export-onnx)."
        )
    app.mount(BROWSER_PATH, page, name="browser-demo")
