"""Bad input against a running server: each gets its documented 4xx in OpenAI's error shape and the server answers
correctly afterwards; images from allowed hosts only; the API key; embeddings as content parts; a bad request
beside good ones in a batch; clients that leave stop their generation; a full queue answers 429 and a slow request
504."""

from __future__ import annotations

import base64
import copy
import http.server
import io
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from helpers import draw_image
from PIL import Image

from llava_qwen3.conversion import build_tiny_checkpoint
from llava_qwen3.conversion.modalities import add_modality
from llava_qwen3.inference.torch_backend import TorchBackend
from llava_qwen3.serving import ServerLimits, ServerOptions, create_app
from llava_qwen3.serving.launcher import HOST, ServerProcess, free_port

# The server drives the inference interface, which test_inference.py checks on both transformers lines.
pytestmark = pytest.mark.one_line

KEY = "sk-test-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_TOKENS = 6
QUESTION = "What is in the picture?"
LIMITS = {
    "max_images": 2,
    "max_prompt_tokens": 200,
    "max_tokens": 400,
    "max_upload_bytes": 65536,
    "max_request_bytes": 262144,
}


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG file whose header declares `width` x `height` pixels (its data holds almost nothing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def npy_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return base64.b64encode(buffer.getvalue()).decode()


def image_body(url: str, question: str = QUESTION, **settings) -> dict:
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": question}]
    return {"messages": [{"role": "user", "content": content}], "max_tokens": MAX_TOKENS, **settings}


def embedding_body(data: str, modality: str = "m1") -> dict:
    content = [{"type": "input_embedding", "modality": modality, "data": data}, {"type": "text", "text": "Which?"}]
    return {"messages": [{"role": "user", "content": content}], "max_tokens": MAX_TOKENS}


class ImageHost(http.server.BaseHTTPRequestHandler):
    """A loopback web server with a picture, redirects to itself and to another host, and a file too large."""

    routes: dict[str, tuple[int, dict, bytes]] = {}

    def do_GET(self) -> None:
        status, headers, body = self.routes.get(self.path, (404, {}, b"not found"))
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@dataclass
class Setup:
    server: ServerProcess
    model: torch.nn.Module
    processor: object
    picture: bytes
    image_host: str
    other_port: int

    def chat(self, body: dict, headers: dict | None = None, **kwargs) -> httpx.Response:
        headers = AUTH if headers is None else headers
        return httpx.post(self.server.url + "/v1/chat/completions", json=body, headers=headers, timeout=120, **kwargs)


def model_answer(setup: Setup, text: str, images=(), embeddings=None) -> str:
    inputs = setup.processor(images=list(images) or None, text=text, modality_embeds=embeddings, return_tensors="pt")
    output = setup.model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
    return setup.processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def chat_prompt(processor, content: list[dict]) -> str:
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-m1")
    model, processor = build_tiny_checkpoint(folder)
    add_modality(model, processor, "m1", input_dim=8)
    # No stop token: a request runs for exactly its max_tokens, whatever the random weights say.
    model.generation_config.eos_token_id = None
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    picture = png_bytes(draw_image(3))
    other_port = free_port()
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8))
    host = http.server.ThreadingHTTPServer((HOST, 0), ImageHost)
    image_host = f"{HOST}:{host.server_address[1]}"
    ImageHost.routes = {
        "/picture.png": (200, {"Content-Type": "image/png"}, picture),
        "/same-host": (302, {"Location": "/picture.png"}, b""),
        "/other-host": (302, {"Location": f"http://{HOST}:{other_port}/picture.png"}, b""),
        "/large.png": (200, {"Content-Type": "image/png"}, png_bytes(noise)),
    }
    threading.Thread(target=host.serve_forever, daemon=True).start()
    options = [f"--{name.replace('_', '-')}={value}" for name, value in LIMITS.items()]
    args = ["--model", str(folder), "--api-key", KEY, "--allow-image-host", image_host, "--batch-wait-ms", "100"]
    args += ["--threads", "1"]
    log = tmp_path_factory.mktemp("logs") / "safety-server.log"
    try:
        with ServerProcess(args + options, log_path=log) as server:
            yield Setup(server, model, processor, picture, image_host, other_port)
    finally:
        host.shutdown()


@pytest.fixture(scope="module")
def good_answer(setup) -> str:
    """The model's greedy answer to the good request, computed in this process."""
    text = chat_prompt(setup.processor, [{"type": "image"}, {"type": "text", "text": QUESTION}])
    return model_answer(setup, text, [Image.open(io.BytesIO(setup.picture)).convert("RGB")])


def _question(setup: Setup, files: dict, data: dict | None = None, headers: dict | None = None) -> httpx.Response:
    return httpx.post(setup.server.url + "/question", files=files, data=data, headers=headers or AUTH, timeout=120)


BadInput = Callable[[Setup], httpx.Response]
BAD_INPUTS: dict[str, tuple[BadInput, int, str]] = {
    "truncated image": (lambda s: s.chat(image_body(data_url(s.picture[: len(s.picture) // 2]))), 400, "invalid_image"),
    "non-image bytes": (lambda s: s.chat(image_body(data_url(b"GIF89a? no, plain text"))), 400, "invalid_image"),
    "PNG declaring 30000x30000": (
        lambda s: s.chat(image_body(data_url(png_declaring(30000, 30000)))),
        413,
        "image_too_large",
    ),
    "PNG declaring 5000x5000": (
        lambda s: s.chat(image_body(data_url(png_declaring(5000, 5000)))),
        413,
        "image_too_large",
    ),
    "upload over the byte limit": (
        lambda s: _question(s, {"image": ("a.png", b"\0" * 70000, "image/png")}, {"question": "Hi"}),
        413,
        "upload_too_large",
    ),
    "body over the byte limit": (
        lambda s: s.chat(image_body(data_url(b"\0" * 600000))),
        413,
        "request_too_large",
    ),
    "text/plain to a JSON endpoint": (
        lambda s: httpx.post(
            s.server.url + "/v1/chat/completions",
            content=json.dumps(image_body(data_url(s.picture))),
            headers={**AUTH, "Content-Type": "text/plain"},
        ),
        415,
        "unsupported_media_type",
    ),
    "JSON to a multipart endpoint": (
        lambda s: httpx.post(s.server.url + "/question", json={"question": "Hi"}, headers=AUTH),
        415,
        "unsupported_media_type",
    ),
    "image URL that is not a data URL of an image": (
        lambda s: s.chat(image_body("data:text/plain;base64,aGVsbG8=")),
        400,
        "invalid_image_url",
    ),
    "missing messages": (lambda s: s.chat({"max_tokens": 3}), 400, "missing_field"),
    "missing question": (
        lambda s: _question(s, {"image": ("a.png", s.picture, "image/png")}),
        400,
        "missing_field",
    ),
    "missing image": (
        lambda s: _question(s, {"other": ("a.png", s.picture)}, {"question": "Hi"}),
        400,
        "missing_field",
    ),
    "non-image upload": (
        lambda s: _question(s, {"image": ("a.png", b"%PDF-1.4 not a picture", "image/png")}, {"question": "Hi"}),
        400,
        "invalid_image",
    ),
    "malformed JSON": (
        lambda s: httpx.post(
            s.server.url + "/v1/chat/completions",
            content=b'{"messages": [{"role": "user", "content": "Hi"}',
            headers={**AUTH, "Content-Type": "application/json"},
        ),
        400,
        "invalid_json",
    ),
    "wrong type of a field": (
        lambda s: s.chat({**image_body(data_url(s.picture)), "max_tokens": "many"}),
        400,
        "invalid_value",
    ),
    "unknown parameter": (
        lambda s: s.chat({**image_body(data_url(s.picture)), "logprobs": True}),
        400,
        "unknown_parameter",
    ),
    "n = 2": (lambda s: s.chat({**image_body(data_url(s.picture)), "n": 2}), 400, "invalid_value"),
    "too many tokens asked for": (
        lambda s: s.chat(image_body(data_url(s.picture), max_tokens=401)),
        400,
        "max_tokens_too_large",
    ),
    "too many prompt tokens": (
        lambda s: s.chat(image_body(data_url(s.picture), "word " * 300)),
        400,
        "prompt_too_long",
    ),
    "too many images": (
        lambda s: s.chat(
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(s.picture)}}] * 3}
                ]
            }
        ),
        400,
        "too_many_images",
    ),
    "image URL on a host not allowed": (
        lambda s: s.chat(image_body("http://127.0.0.1/picture.png")),
        400,
        "image_host_not_allowed",
    ),
    "image URL on another port of an allowed host": (
        lambda s: s.chat(image_body(f"http://{HOST}:{s.other_port}/picture.png")),
        400,
        "image_host_not_allowed",
    ),
    "file URL": (lambda s: s.chat(image_body("file:///etc/passwd")), 400, "invalid_image_url"),
    "redirect to another host": (lambda s: s.chat(image_body(f"http://{s.image_host}/other-host")), 400, "redirect"),
    "allowed URL that is missing": (
        lambda s: s.chat(image_body(f"http://{s.image_host}/nothing.png")),
        400,
        "image_fetch_failed",
    ),
    "allowed URL too large": (
        lambda s: s.chat(image_body(f"http://{s.image_host}/large.png")),
        413,
        "upload_too_large",
    ),
    "wrong API key": (
        lambda s: s.chat(image_body(data_url(s.picture)), headers={"Authorization": "Bearer sk-wrong"}),
        401,
        "invalid_api_key",
    ),
    "no API key": (lambda s: s.chat(image_body(data_url(s.picture)), headers={}), 401, "invalid_api_key"),
    "unknown model": (lambda s: s.chat({**image_body(data_url(s.picture)), "model": "gpt-4o"}), 404, "model_not_found"),
    "placeholder without its image": (
        lambda s: s.chat({"messages": [{"role": "user", "content": "<image> What is it?"}], "max_tokens": 3}),
        400,
        "bad_input",
    ),
    "unknown modality": (
        lambda s: s.chat(embedding_body(npy_base64(np.ones(8, np.float32)), "m7")),
        400,
        "unknown_modality",
    ),
    "embedding of the wrong dimension": (
        lambda s: s.chat(embedding_body(npy_base64(np.ones(5, np.float32)))),
        400,
        "bad_input",
    ),
    "embedding that is not a .npy file": (
        lambda s: s.chat(embedding_body(base64.b64encode(b"1,2,3").decode())),
        400,
        "invalid_embedding",
    ),
    "embedding of integers": (
        lambda s: s.chat(embedding_body(npy_base64(np.ones(8, np.int64)))),
        400,
        "invalid_embedding",
    ),
    "embedding that is not base64": (lambda s: s.chat(embedding_body("not base64!")), 400, "invalid_base64"),
    "unknown conversation": (
        lambda s: httpx.post(s.server.url + "/chat", json={"message": "Hi", "conversation_id": "nope"}, headers=AUTH),
        404,
        "conversation_not_found",
    ),
    "unknown endpoint": (lambda s: httpx.get(s.server.url + "/v2/anything", headers=AUTH), 404, "not_found"),
    "wrong method": (
        lambda s: httpx.get(s.server.url + "/v1/chat/completions", headers=AUTH),
        405,
        "method_not_allowed",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_its_4xx_and_the_server_answers_correctly_afterwards(case, setup, good_answer):
    send, status, code = BAD_INPUTS[case]
    response = send(setup)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and set(error) == {"message", "type", "param", "code"}
    after = setup.chat(image_body(data_url(setup.picture)))
    assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"] == good_answer


def test_health_and_metrics_are_open_and_the_api_needs_the_key(setup):
    assert httpx.get(setup.server.url + "/health").status_code == 200
    assert httpx.get(setup.server.url + "/metrics").status_code == 200
    refused = httpx.get(setup.server.url + "/v1/models")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert httpx.get(setup.server.url + "/v1/models", headers=AUTH).status_code == 200


def test_images_from_the_allowed_host_and_redirects_within_it(setup, good_answer):
    for path in ("/picture.png", "/same-host"):
        response = setup.chat(image_body(f"http://{setup.image_host}{path}"))
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == good_answer


def test_an_embedding_content_part_conditions_the_answer(setup):
    vector = np.linspace(-1, 1, 8, dtype=np.float32)
    sequence = np.stack([vector, -vector, vector * 2])
    for item in (vector, sequence):
        response = setup.chat(embedding_body(npy_base64(item)))
        assert response.status_code == 200, response.text
        content = [{"type": "embedding", "modality": "m1"}, {"type": "text", "text": "Which?"}]
        text = chat_prompt(setup.processor, content)
        expected = model_answer(setup, text, embeddings={"m1": [torch.from_numpy(item)]})
        assert response.json()["choices"][0]["message"]["content"] == expected
        assert response.json()["usage"]["prompt_tokens"] == len(setup.processor.tokenizer(text)["input_ids"]) - 1 + len(
            np.atleast_2d(item)
        )


def _metric(setup: Setup, name: str) -> float:
    for line in httpx.get(setup.server.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_bad_requests_fail_alone_beside_good_ones_in_a_batch(setup, good_answer):
    good = image_body(data_url(setup.picture))
    bad = [embedding_body(npy_base64(np.ones(5, np.float32))), {"messages": [{"role": "user", "content": "<image>"}]}]
    bodies = [good, bad[0], good, bad[1], good]
    single_before = _metric(setup, 'llava_qwen3_batch_size_bucket{le="1.0"}')
    batches_before = _metric(setup, "llava_qwen3_batch_size_count")
    barrier = threading.Barrier(len(bodies))
    responses: list[httpx.Response | None] = [None] * len(bodies)

    def send(index: int) -> None:
        barrier.wait()
        responses[index] = setup.chat(bodies[index])

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [response.status_code for response in responses] == [200, 400, 200, 400, 200]
    assert all(responses[i].json()["choices"][0]["message"]["content"] == good_answer for i in (0, 2, 4))
    assert all(responses[i].json()["error"]["code"] == "bad_input" for i in (1, 3))
    batches = _metric(setup, "llava_qwen3_batch_size_count") - batches_before
    assert batches - (_metric(setup, 'llava_qwen3_batch_size_bucket{le="1.0"}') - single_before) >= 1, (
        "the five requests were never decoded together"
    )


def _wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_clients_that_leave_stop_their_generation(setup):
    body = image_body(data_url(setup.picture), max_tokens=400)
    cancelled = 'llava_qwen3_generations_total{finish_reason="cancelled"}'
    for stream in (True, False):
        before, tokens_before = _metric(setup, cancelled), _metric(setup, "llava_qwen3_completion_tokens_total")
        if stream:
            with httpx.stream(
                "POST", setup.server.url + "/v1/chat/completions", json={**body, "stream": True}, headers=AUTH
            ) as response:
                next(response.iter_lines())  # the stream has begun: the request is decoding; now leave
        else:
            payload = json.dumps(body).encode()
            head = (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {KEY}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
            )
            with socket.create_connection((HOST, setup.server.port)) as connection:
                connection.sendall(head.encode() + payload)
                assert _wait_for(lambda: httpx.get(setup.server.url + "/health").json()["decoding"] == 1)
        assert _wait_for(lambda count=before + 1: _metric(setup, cancelled) == count), f"stream={stream}: not cancelled"
        assert _metric(setup, "llava_qwen3_completion_tokens_total") - tokens_before < 400
        assert httpx.get(setup.server.url + "/health").json()["decoding"] == 0


@contextmanager
def serve_in_thread(app):
    """The app on a real uvicorn server on loopback, in a thread of this process (for limits set small)."""
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert _wait_for(lambda: server.started, 60)
        yield f"http://{HOST}:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def tiny_backend(tiny_clip):
    """The tiny model without a stop token, so a request runs for exactly its max_tokens."""
    _, model, processor = tiny_clip
    model = copy.deepcopy(model)
    model.generation_config.eos_token_id = None
    return TorchBackend(model, processor)


def _text_body(max_tokens: int, **extra) -> dict:
    return {"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": max_tokens, **extra}


def test_a_full_queue_answers_429_and_recovers(tiny_backend):
    limits = ServerLimits(max_queue=2, max_batch_size=1, batch_wait_ms=0)
    clients = 16
    with serve_in_thread(create_app(tiny_backend, limits, ServerOptions(model_name="tiny"))) as url:
        # Sixteen long requests at once: one decodes, two wait, and the worker cannot empty the queue before the
        # others arrive.
        barrier = threading.Barrier(clients)
        statuses: list[tuple[int, str | None]] = []

        def send() -> None:
            barrier.wait()
            response = httpx.post(url + "/v1/chat/completions", json=_text_body(480), timeout=120)
            statuses.append((response.status_code, response.json().get("error", {}).get("code")))

        threads = [threading.Thread(target=send) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert len(statuses) == clients
        assert {status for status in statuses if status[0] != 200} == {(429, "queue_full")}
        assert 3 <= statuses.count((200, None)) < clients
        assert httpx.post(url + "/v1/chat/completions", json=_text_body(1)).status_code == 200


def test_a_request_past_its_timeout_answers_504_and_stops(tiny_backend):
    # 480 tokens take seconds on a CPU; a short answer a few milliseconds.
    limits = ServerLimits(request_timeout_s=0.25, max_batch_size=1)
    with serve_in_thread(create_app(tiny_backend, limits, ServerOptions(model_name="tiny"))) as url:
        started = time.monotonic()
        slow = httpx.post(url + "/v1/chat/completions", json=_text_body(480), timeout=60)
        assert slow.status_code == 504 and slow.json()["error"]["code"] == "timeout"
        assert time.monotonic() - started < 10
        streamed = httpx.post(url + "/v1/chat/completions", json=_text_body(480, stream=True), timeout=60)
        events = [line for line in streamed.text.split("\n\n") if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and json.loads(events[-2][6:])["error"]["code"] == "timeout"
        assert _wait_for(lambda: httpx.get(url + "/health").json()["decoding"] == 0, 10)
        assert httpx.post(url + "/v1/chat/completions", json=_text_body(1)).status_code == 200


def test_an_engine_fault_fails_its_batch_with_500_and_the_worker_lives_on(tiny_backend, monkeypatch):
    decode = tiny_backend.generate
    calls = []

    def fails_once(requests):  # a fault injected into the real backend's first batch
        calls.append(len(requests))
        if len(calls) == 1:
            raise RuntimeError("injected engine fault")
        return decode(requests)

    monkeypatch.setattr(tiny_backend, "generate", fails_once)
    with serve_in_thread(create_app(tiny_backend, ServerLimits(), ServerOptions(model_name="tiny"))) as url:
        failed = httpx.post(url + "/v1/chat/completions", json=_text_body(2))
        assert failed.status_code == 500 and failed.json()["error"]["code"] == "engine_error"
        assert httpx.get(url + "/health").json()["status"] == "ok"
        assert httpx.post(url + "/v1/chat/completions", json=_text_body(2)).status_code == 200


def test_conversations_are_bounded_in_number_time_and_bytes():
    from llava_qwen3.serving.conversations import ConversationStore
    from llava_qwen3.serving.prompts import Conversation

    now = [0.0]
    store = ConversationStore(max_conversations=2, ttl_s=10, max_bytes=64 * 64 * 3 * 2 + 100, clock=lambda: now[0])
    picture = Image.new("RGB", (64, 64))
    ids = [store.put(Conversation([{"role": "user", "content": "hi"}], [picture])) for _ in range(2)]
    assert store.get(ids[0]) is not None  # now the most recently used
    third = store.put(Conversation([{"role": "user", "content": "hi"}], [picture]))
    assert store.get(ids[1]) is None and store.get(ids[0]) is not None and len(store) == 2
    store.put(Conversation([], [picture, picture]))  # the byte budget leaves room for this one alone
    assert len(store) == 1 and store.get(third) is None
    now[0] = 11.0
    assert len(store) == 0
