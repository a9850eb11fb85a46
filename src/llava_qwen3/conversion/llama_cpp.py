"""llama.cpp's executables driven from Python: finding them, quantizing a GGUF file with `llama-quantize`, and a
`llama-server` on a free loopback port with a language model and its mmproj (the GGUF tests and the benchmark).

The executables come from a llama.cpp build (scripts/build_llama_cpp.sh builds them from the llama.cpp that the
llama-cpp-python source distribution vendors) and are found in a given folder or on the PATH.
"""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from PIL import Image

BUILD_HINT = "build it with scripts/build_llama_cpp.sh, which prints the folder of llama.cpp's executables"


def find_executable(name: str, folder: str | Path | None = None) -> Path:
    """llama.cpp's executable `name` in `folder`, or on the PATH when no folder is given; a ValueError saying how to
    get it otherwise."""
    found = Path(folder) / name if folder else shutil.which(name)
    if found is None or not Path(found).is_file():
        where = f"in {folder}" if folder else "on the PATH"
        raise ValueError(f"llama.cpp's {name} is not {where}: {BUILD_HINT}.")
    return Path(found)


def quantize(llama_quantize: Path, source: Path, target: Path, quantization: str) -> None:
    """Writes `source` quantized to `quantization` (llama.cpp's name, e.g. Q4_K_M) as `target`; llama-quantize's own
    message becomes the error when it fails."""
    result = subprocess.run(
        [str(llama_quantize), str(source), str(target), quantization], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"{llama_quantize} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")


def image_data(image: Image.Image) -> str:
    """A picture as llama-server takes it in `multimodal_data`: PNG bytes in base64."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class LlamaServer:
    """A running llama-server (see `llama_server`) at `url`, process `pid`: completions of a prompt with pictures at
    `<image>`."""

    def __init__(self, url: str, pid: int) -> None:
        self.url = url
        self.pid = pid
        self.media_marker = httpx.get(f"{url}/props").json()["media_marker"]

    def complete(
        self, prompt: str, images: list[Image.Image], image_token: str, new_tokens: int, ignore_eos: bool = True
    ) -> dict:
        """llama-server's greedy completion of `prompt` (the processor's chat prompt, each `image_token` where a
        picture goes), without its prompt cache: exactly `new_tokens` tokens (the end of sequence ignored, as
        transformers' `min_new_tokens` does) or, without `ignore_eos`, up to `new_tokens`. The response, with `tokens`
        and `timings`."""
        body = {
            "prompt": {
                "prompt_string": prompt.replace(image_token, self.media_marker),
                "multimodal_data": [image_data(image) for image in images],
            },
            "n_predict": new_tokens,
            "temperature": 0,
            "ignore_eos": ignore_eos,
            "return_tokens": True,
            "cache_prompt": False,
        }
        response = httpx.post(f"{self.url}/completion", json=body, timeout=600)
        response.raise_for_status()
        return response.json()


@contextmanager
def llama_server(
    language_model: Path, projector: Path, folder: str | Path | None = None, threads: int = 2, timeout_s: float = 300
) -> Iterator[LlamaServer]:
    """llama-server (from `folder` or the PATH) on a free loopback port with a GGUF language model and its mmproj,
    one request at a time; yields it once /health answers and stops it at the end."""
    from ..serving.launcher import HOST, free_port  # the loopback conventions of the package's own server

    port = free_port()
    command = [str(find_executable("llama-server", folder)), "-m", str(language_model), "--mmproj", str(projector)]
    command += ["--host", HOST, "--port", str(port), "--threads", str(threads), "--parallel", "1"]
    command += ["--ctx-size", "2048", "--no-warmup"]
    url = f"http://{HOST}:{port}"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while not _answers(f"{url}/health"):
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    output = log.read().decode(errors="replace")[-3000:]
                    raise RuntimeError(f"llama-server did not start (exit status {server.poll()}):\n{output}")
                time.sleep(0.1)
            yield LlamaServer(url, server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
