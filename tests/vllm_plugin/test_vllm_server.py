"""vLLM's OpenAI-compatible server, started as users start it, answers a chat completion holding a base64 image with
transformers' greedy tokens; bad input gets a 400 that says what was wrong.

The server runs with tensor parallelism over two CPU worker processes (one core each): the tower, the projector and
Qwen3 are sharded. Every server process (API, engine core, workers) finds the architecture only through the plugin's
entry point.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from helpers import draw_image, require
from vllm_checkpoints import (
    ENGINE_ENV,
    MAX_NEW_TOKENS,
    build_engine_checkpoint,
    chat,
    copy_with_vision_model_level,
)

require("vllm")

import httpx  # noqa: E402  (both clients come with vLLM)
import openai  # noqa: E402

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 480  # about a minute on an idle 2-core machine; much more beside other jobs
QUESTION = "What is in the picture?"
SERVED_NAME = "tiny-llava-qwen3"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, server: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}:\n{log_path.read_text()[-5000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    pytest.fail(f"the server was not healthy after {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-5000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, transformers model, processor) of a 2-way tensor-parallel server on a tiny SigLIP checkpoint with
    the mlp_relu_ln projector (whose LayerNorm needs the gathered hidden vector), saved under the `vision_model.`
    tower names of transformers 4.x."""
    folder = tmp_path_factory.mktemp("vllm-server")
    model, processor = build_engine_checkpoint(folder / "checkpoint", vision="siglip", projector_type="mlp_relu_ln")
    checkpoint = copy_with_vision_model_level(folder / "checkpoint", folder / "vision_model_level")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(checkpoint),
        "--served-model-name",
        SERVED_NAME,
        "--trust-remote-code",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "512",
        "--tensor-parallel-size",
        "2",
    ]
    log_path = folder / "server.log"
    # One core per worker: vLLM's automatic binding keeps a core free for the API process, which 2 cores cannot spare.
    env = {**os.environ, **ENGINE_ENV, "HF_HUB_OFFLINE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0|1"}
    with open(log_path, "w") as log:
        # A session of its own, so that teardown stops the server's engine and worker processes with it.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, log_path)
        yield url, model, processor
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):  # whatever of the session is still running
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_chat_completion_with_a_base64_image_answers_like_transformers(server):
    url, model, processor = server
    image = draw_image(5)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    response = client.chat.completions.create(
        model=SERVED_NAME,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url(image)}},
                    {"type": "text", "text": QUESTION},
                ],
            }
        ],
        temperature=0,
        max_tokens=MAX_NEW_TOKENS,
        extra_body={"return_token_ids": True},  # vLLM's extension: the generated ids beside the text
    )

    inputs = processor(images=[image], text=chat(processor, QUESTION, [{"type": "image"}]), return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    expected_tokens = output[0, inputs["input_ids"].shape[1] :].tolist()
    expected_text = processor.decode(expected_tokens, skip_special_tokens=True)
    [choice] = response.choices
    assert choice.token_ids == expected_tokens
    assert choice.message.content == expected_text and expected_text.strip()
    assert response.prompt_token_ids == inputs["input_ids"][0].tolist()


def test_more_placeholders_than_images_is_a_400_naming_both_counts(server):
    url, _, _ = server
    content = [
        {"type": "image_url", "image_url": {"url": data_url(draw_image(6))}},
        {"type": "text", "text": "Compare it with <image>"},
    ]
    response = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": SERVED_NAME, "messages": [{"role": "user", "content": content}], "max_tokens": 2},
        timeout=60,
    )
    assert response.status_code == 400
    assert "holds 2 <image> placeholders but 1 image items were given" in response.text
