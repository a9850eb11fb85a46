"""The model in the browser: a static page that runs an ONNX export with transformers.js (WASM, WebGPU where the
browser has it), written out with its library and model for any static host (`llava-qwen3-browser-demo`) and
served by `llava-qwen3-serve --browser-demo`.

Needs no Python package beyond the core ones; fetching transformers.js needs npm (or the cache it fills).
"""

from .page import ONNXRUNTIME_WEB, TRANSFORMERS_JS, is_page_folder, write_page

__all__ = ["ONNXRUNTIME_WEB", "TRANSFORMERS_JS", "is_page_folder", "write_page"]
