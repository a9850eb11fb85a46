"""The server in a child process on loopback, serving the demo model: every endpoint answers what the model answers
in process; streamed chunks join to the whole answer; the `openai` client and curl work against it; 32 concurrent
clients get their answers without an error; both backends give the same greedy text; the web page streams an answer
in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import fields
from pathlib import Path

import httpx
import pytest
from helpers import ARTIFACTS, CHROMIUM_FLAGS, ROOT
from openai import OpenAI

from llava_qwen3.serving import ServerLimits
from llava_qwen3.serving.launcher import ServerProcess
from llava_qwen3.training.synthetic import QUESTIONS, draw_scene, random_scenes

# The server drives the inference interface, which test_inference.py checks on both transformers lines.
pytestmark = pytest.mark.one_line

MAX_TOKENS = 12
DOCS_SERVER = "http://127.0.0.1:8000"  # where docs/serving.md's examples expect the server


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    """Three PNG files of fresh shapes scenes."""
    folder = tmp_path_factory.mktemp("pictures")
    paths = []
    for index, scene in enumerate(random_scenes(3, "train", seed=11)):
        paths.append(folder / f"scene-{index}.png")
        draw_scene(scene).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def demo_server(demo_model, tmp_path_factory):
    folder = demo_model[0]
    log = tmp_path_factory.mktemp("logs") / "torch-server.log"
    # One engine thread: the test's own clients need the other core of a small machine.
    args = ["--model", str(folder), "--served-model-name", "demo", "--threads", "1"]
    with ServerProcess(args, log_path=log) as server:
        yield server


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def image_message(path: Path, question: str) -> dict:
    content = [{"type": "image_url", "image_url": {"url": data_url(path)}}, {"type": "text", "text": question}]
    return {"role": "user", "content": content}


def model_answer(demo_model, messages: list[dict], images: list[Path], max_new_tokens: int = MAX_TOKENS):
    """(greedy text, prompt tokens) of the model in this process, through the processor and `generate`."""
    from PIL import Image

    _, model, processor = demo_model
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    pictures = [Image.open(path).convert("RGB") for path in images]
    inputs = processor(images=pictures or None, text=text, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    prompt_length = inputs["input_ids"].shape[1]
    return processor.decode(output[0, prompt_length:], skip_special_tokens=True), prompt_length


def template_turn(question: str, images: int = 1) -> dict:
    return {"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": question}]}


def sse_events(response: httpx.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in response.text.split("\n\n") if line.startswith("data: ")]


def test_health_models_openapi_metrics_and_page(demo_server):
    health = httpx.get(demo_server.url + "/health").json()
    assert health == {
        "status": "ok",
        "model": "demo",
        "model_loaded": True,
        "backend": "torch",
        "device": "cpu",
        "queue_depth": 0,
        "decoding": 0,
    }
    models = httpx.get(demo_server.url + "/v1/models").json()
    assert [model["id"] for model in models["data"]] == ["demo"] and models["object"] == "list"
    paths = httpx.get(demo_server.url + "/openapi.json").json()["paths"]
    for path in ("/v1/chat/completions", "/v1/models", "/caption", "/question", "/chat", "/health", "/metrics"):
        assert path in paths
    assert "input_embedding" in json.dumps(httpx.get(demo_server.url + "/openapi.json").json())
    metrics = httpx.get(demo_server.url + "/metrics").text
    for name in ("llava_qwen3_requests_total", "llava_qwen3_request_seconds", "llava_qwen3_batch_size"):
        assert name in metrics
    assert "llava_qwen3_queue_depth 0.0" in metrics
    page = httpx.get(demo_server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/v1/chat/completions" in page.text


def test_openai_client_plain_and_streamed_give_the_models_greedy_answer(demo_server, demo_model, pictures):
    client = OpenAI(base_url=demo_server.url + "/v1", api_key="not-needed", max_retries=0)
    for path, question in zip(pictures, QUESTIONS.values(), strict=True):
        expected, prompt_tokens = model_answer(demo_model, [template_turn(question)], [path])
        messages = [image_message(path, question)]
        completion = client.chat.completions.create(model="demo", messages=messages, max_tokens=MAX_TOKENS)
        choice = completion.choices[0]
        assert choice.message.content == expected and choice.message.role == "assistant"
        assert choice.finish_reason == "stop"
        assert completion.usage.prompt_tokens == prompt_tokens
        assert completion.usage.total_tokens == prompt_tokens + completion.usage.completion_tokens
        stream = client.chat.completions.create(
            model="demo", messages=messages, max_tokens=MAX_TOKENS, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        pieces = [chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices]
        assert "".join(pieces) == expected
        assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
        assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens
    assert len([piece for piece in pieces if piece]) >= 2, "the answer arrived in one piece; nothing was streamed"


def test_raw_stream_is_server_sent_events_ending_with_done(demo_server, pictures):
    body = {"messages": [image_message(pictures[0], QUESTIONS["kind"])], "max_tokens": MAX_TOKENS}
    whole = httpx.post(demo_server.url + "/v1/chat/completions", json=body).json()
    response = httpx.post(demo_server.url + "/v1/chat/completions", json={**body, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


def test_stop_strings_token_limit_and_seeded_sampling(demo_server, demo_model, pictures):
    url = demo_server.url + "/v1/chat/completions"
    question = QUESTIONS["colour"]
    expected, _ = model_answer(demo_model, [template_turn(question)], [pictures[1]])
    body = {"messages": [image_message(pictures[1], question)], "max_tokens": MAX_TOKENS}
    stop = expected[2:4]
    cut = httpx.post(url, json={**body, "stop": [stop]}).json()["choices"][0]
    message = {"role": "assistant", "content": expected[: expected.find(stop)]}
    assert cut == {"index": 0, "message": message, "finish_reason": "stop"}
    short = httpx.post(url, json={**body, "max_completion_tokens": 1}).json()
    assert short["choices"][0]["finish_reason"] == "length" and short["usage"]["completion_tokens"] == 1
    sampled = [httpx.post(url, json={**body, "temperature": 1.8, "top_p": 0.95, "seed": 5}).json() for _ in range(2)]
    assert sampled[0]["choices"] == sampled[1]["choices"]


@pytest.mark.needs("curl")
def test_caption_and_question_with_curl(demo_server, demo_model, pictures):
    def curl(endpoint: str, *fields: str) -> dict:
        command = ["curl", "-sS", "--fail-with-body", "--max-time", "120", demo_server.url + endpoint]
        for field in fields:
            command += ["-F", field]
        result = subprocess.run(command, capture_output=True, text=True, timeout=150)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    question = QUESTIONS["count"]
    expected, prompt_tokens = model_answer(demo_model, [template_turn(question)], [pictures[2]])
    answer = curl("/question", f"image=@{pictures[2]}", f"question={question}", f"max_new_tokens={MAX_TOKENS}")
    assert answer["text"] == expected and answer["usage"]["prompt_tokens"] == prompt_tokens
    assert answer["finish_reason"] == "stop"
    caption, _ = model_answer(demo_model, [template_turn("Describe the picture.")], [pictures[2]])
    assert curl("/caption", f"image=@{pictures[2]};type=image/png", f"max_new_tokens={MAX_TOKENS}")["text"] == caption


def test_chat_continues_a_conversation_kept_by_the_server(demo_server, demo_model, pictures):
    url = demo_server.url + "/chat"
    first_question, second_question = QUESTIONS["colour"], QUESTIONS["kind"]
    body = {"message": first_question, "images": [data_url(pictures[0])], "max_new_tokens": MAX_TOKENS}
    first = httpx.post(url, json=body).json()
    turns = [template_turn(first_question)]
    expected_first, _ = model_answer(demo_model, turns, [pictures[0]])
    assert first["text"] == expected_first
    body = {"message": second_question, "conversation_id": first["conversation_id"], "max_new_tokens": MAX_TOKENS}
    second = httpx.post(url, json=body).json()
    turns += [
        {"role": "assistant", "content": [{"type": "text", "text": expected_first}]},
        template_turn(second_question, images=0),
    ]
    expected_second, prompt_tokens = model_answer(demo_model, turns, [pictures[0]])
    assert second["text"] == expected_second and second["conversation_id"] == first["conversation_id"]
    assert second["usage"]["prompt_tokens"] == prompt_tokens
    # The second turn starts from the first one's KV cache (the server's prefix cache): its whole prompt at least.
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert first["usage"]["prompt_tokens"] <= cached < prompt_tokens
    metrics = httpx.get(demo_server.url + "/metrics").text
    assert float(re.search(r"^llava_qwen3_cached_prompt_tokens_total (\S+)$", metrics, re.M).group(1)) >= cached
    other = httpx.post(url, json={"message": "Hello", "conversation_id": "no-such-conversation"})
    assert other.status_code == 404 and other.json()["error"]["code"] == "conversation_not_found"


def docs_examples(language: str, server: ServerProcess) -> list[str]:
    """The `language` code blocks of docs/serving.md that talk to a running server, pointed at `server`."""
    text = (ROOT / "docs" / "serving.md").read_text()
    blocks = re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)
    examples = [block for block in blocks if DOCS_SERVER in block and "llava-qwen3-serve" not in block]
    return [block.replace(DOCS_SERVER, server.url) for block in examples]


def test_the_docs_examples_run_as_written(demo_server, pictures, tmp_path):
    (tmp_path / "picture.png").write_bytes(pictures[0].read_bytes())
    examples = [(["bash", "-euo", "pipefail", "-c"], code) for code in docs_examples("bash", demo_server)]
    examples += [([sys.executable, "-c"], code) for code in docs_examples("python", demo_server)]
    assert len(examples) == 4
    outputs = []
    for command, code in examples:
        result = subprocess.run([*command, code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and result.stdout.strip(), f"{code}\n{result.stdout}\n{result.stderr}"
        outputs.append(result.stdout)
    assert outputs[0].count('"finish_reason":"stop"') == 3 and outputs[1].endswith("data: [DONE]\n\n")
    assert "unknown_modality" in outputs[3]  # the demo model has no m1: the documented 400


def _batch_counts(metrics: str) -> tuple[float, float]:
    """(batches decoded, batches of one request) from the Prometheus text."""
    values = {}
    for line in metrics.splitlines():
        if line.startswith("llava_qwen3_batch_size_count") or line.startswith(
            'llava_qwen3_batch_size_bucket{le="1.0"}'
        ):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values["llava_qwen3_batch_size_count"], values['llava_qwen3_batch_size_bucket{le="1.0"}']


@pytest.mark.slow
def test_32_concurrent_clients_get_their_answers_without_an_error(demo_server, demo_model, pictures):
    clients, per_client = 32, 3
    question = QUESTIONS["colour"]
    expected = {path: model_answer(demo_model, [template_turn(question)], [path])[0] for path in pictures}
    bodies = {path: {"messages": [image_message(path, question)], "max_tokens": MAX_TOKENS} for path in pictures}
    batches_before, single_before = _batch_counts(httpx.get(demo_server.url + "/metrics").text)

    def client(number: int) -> list[tuple[Path, int, str]]:
        answers = []
        with httpx.Client(base_url=demo_server.url, timeout=120) as session:
            for request in range(per_client):
                path = pictures[(number + request) % len(pictures)]
                response = session.post("/v1/chat/completions", json=bodies[path])
                text = response.json()["choices"][0]["message"]["content"] if response.status_code == 200 else ""
                answers.append((path, response.status_code, text))
        return answers

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, number) for number in range(clients)]
        done, not_done = wait(futures, timeout=240)
    assert not not_done, "the load test did not finish within its time bound"
    answers = [answer for future in done for answer in future.result()]
    assert len(answers) == clients * per_client
    assert [status for _, status, _ in answers] == [200] * len(answers)
    assert all(text == expected[path] for path, _, text in answers)
    batches, single = _batch_counts(httpx.get(demo_server.url + "/metrics").text)
    assert batches - batches_before < len(answers), "every request was decoded alone: nothing was batched"
    assert batches - batches_before > single - single_before, "no batch held more than one request"


@pytest.mark.slow
def test_the_onnx_backend_gives_the_torch_backends_greedy_text(demo_server, demo_onnx_export, pictures, tmp_path):
    args = ["--model", str(demo_onnx_export), "--backend", "onnx", "--variant", "fp32", "--served-model-name", "demo"]
    args += ["--threads", "1"]
    with ServerProcess(args, log_path=tmp_path / "onnx-server.log") as onnx_server:
        assert httpx.get(onnx_server.url + "/health").json()["backend"] == "onnx"
        for path, question in zip(pictures, QUESTIONS.values(), strict=True):
            body = {"messages": [image_message(path, question)], "max_tokens": MAX_TOKENS}
            answers = [
                httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120).json()
                for server in (demo_server, onnx_server)
            ]
            assert answers[0]["choices"] == answers[1]["choices"]
            # The same counts; only the torch server keeps a prefix cache (earlier tests asked these questions).
            for answer in answers:
                answer["usage"]["prompt_tokens_details"].pop("cached_tokens")
            assert answers[0]["usage"] == answers[1]["usage"]


DROP_FILE = """([name, encoded]) => {
    const bytes = Uint8Array.from(atob(encoded), (character) => character.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, {type: "image/png"}));
    const drop = new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true});
    document.getElementById("drop").dispatchEvent(drop);
}"""
RECORD_ANSWER = """() => {
    window.shown = [];
    const answer = document.getElementById("answer");
    // One entry per change, even when several deltas arrive in one network read and one callback.
    new MutationObserver((records) => {
        for (const record of records) {
            if (record.type === "characterData") window.shown.push(record.target.textContent);
            for (const node of record.addedNodes) window.shown.push(node.textContent);
        }
    }).observe(answer, {childList: true, characterData: true, subtree: true});
}"""


def _ask_on_page(page, question: str) -> list[str]:
    """Asks `question` about the page's picture; the texts the answer showed while it streamed in."""
    page.fill("#question", question)
    page.evaluate(RECORD_ANSWER)
    page.click("#ask")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Finished')", timeout=60000)
    return [text for text in page.evaluate("window.shown") if text]


@pytest.mark.slow
@pytest.mark.needs("chromium")
def test_the_web_page_streams_an_answer_about_an_uploaded_image(demo_server, demo_model, pictures):
    from playwright.sync_api import sync_playwright

    max_new_tokens = ServerLimits().default_max_tokens  # the page leaves max_tokens to the server
    asked = [(pictures[0], QUESTIONS["kind"]), (pictures[1], QUESTIONS["colour"])]
    expected = [model_answer(demo_model, [template_turn(q)], [path], max_new_tokens)[0] for path, q in asked]
    docs = (ROOT / "docs" / "serving.md").read_text()
    # The docs' browser example asks this (text only) and reads the stream.
    body = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
    whole = httpx.post(demo_server.url + "/v1/chat/completions", json=body).json()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "serving-web-page.png"
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_page()
            page.goto(demo_server.url + "/")
            page.set_input_files("#file", str(pictures[0]))  # picked
            page.wait_for_selector("#preview", state="visible")
            shown = _ask_on_page(page, asked[0][1])
            assert page.inner_text("#answer") == expected[0]
            page.screenshot(path=str(screenshot), full_page=True)
            encoded = base64.b64encode(pictures[1].read_bytes()).decode()
            page.evaluate(DROP_FILE, [pictures[1].name, encoded])  # dropped
            page.wait_for_function(f"document.getElementById('drop-text').textContent === '{pictures[1].name}'")
            _ask_on_page(page, asked[1][1])
            assert page.inner_text("#answer") == expected[1]
            (script,) = [block for block in re.findall(r"```javascript\n(.*?)```", docs, re.DOTALL)]
            streamed = page.evaluate(f"async () => {{ {script}\n return answer; }}")
        finally:
            browser.close()
    assert len(set(shown)) >= 2 and shown[-1] == expected[0], f"the answer did not stream in: {shown}"
    assert streamed == whole["choices"][0]["message"]["content"]
    assert screenshot.stat().st_size > 0
    print(f"web page screenshot: {screenshot}")


def test_the_command_and_the_docs_list_every_limit_and_a_missing_model_is_refused():
    command = str(Path(sys.executable).parent / "llava-qwen3-serve")
    result = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    documented = dict(re.findall(r"^\| `(--[a-z-]+)` \| ([^|]+) \|", (ROOT / "docs" / "serving.md").read_text(), re.M))
    for item in fields(ServerLimits):
        flag = "--allow-image-host" if item.name == "allowed_image_hosts" else "--" + item.name.replace("_", "-")
        assert flag in result.stdout
        assert documented[flag].strip() == (str(item.default) if item.default != () else "none"), flag
    missing = subprocess.run(
        [command, "--model", "/no/such/folder", "--port", "9"], capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 2 and "/no/such/folder" in missing.stderr
