"""The model in the browser: `llava-qwen3-browser-demo` writes a static page that runs the ONNX export with
transformers.js (the library and onnxruntime-web's WASM files from the npm registry, served from the page's own
folder); served by `llava-qwen3-serve --browser-demo` and opened in headless Chromium, it answers a question about a
picture (and one without) with the onnxruntime runner's greedy tokens, fetching nothing from another origin. The
server assembles the same page over an export folder; the command refuses bad input and leaves nothing; the pinned
library versions are the Node test's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ARTIFACTS, CHROMIUM_FLAGS, ROOT, draw_image, user_prompt

from llava_qwen3.browser.page import MODEL_FILES, PACKAGES, page_settings
from llava_qwen3.inference.onnx_layout import GRAPHS

MAX_NEW_TOKENS = 10
WAIT_FOR = "(asked) => window.llavaDemo.error || (window.llavaDemo.last && window.llavaDemo.last.question === asked)"


def write_page_command(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`llava-qwen3-browser-demo ARGS` (as `python -m llava_qwen3.browser`), with `env` added to the environment."""
    return subprocess.run(
        [sys.executable, "-m", "llava_qwen3.browser", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
    )


def runner_tokens(folder: Path, processor, question: str, picture: Path | None) -> tuple[list[int], np.ndarray, list]:
    """The onnxruntime runner's greedy new tokens on the graphs the page runs (INT8: transformers.js' q8, and its
    merged decoder), with the prompt's ids and pixel values as the Python processor makes them."""
    from PIL import Image

    from llava_qwen3.inference.onnx_runner import LlavaQwen3OnnxModel

    images = [Image.open(picture)] if picture else None
    inputs = processor(images=images, text=[user_prompt(processor, question, 1 if picture else 0)], return_tensors="np")
    output = LlavaQwen3OnnxModel(folder, variant="quantized", decoder="merged").generate(
        **inputs, max_new_tokens=MAX_NEW_TOKENS
    )
    prompt = inputs["input_ids"][0].tolist()
    return output[0, len(prompt) :].tolist(), inputs.get("pixel_values"), prompt


def ask(page, question: str) -> dict:
    page.fill("#question", question)
    page.fill("#max-tokens", str(MAX_NEW_TOKENS))
    page.click("#ask")
    page.wait_for_function(WAIT_FOR, arg=question, timeout=180_000)
    error = page.evaluate("window.llavaDemo.error")
    assert error is None, f"the page failed: {error}"
    answer = page.evaluate(
        "() => { const l = window.llavaDemo.last;"
        " return {...l, pixel_values: l.pixel_values && Array.from(l.pixel_values.data)}; }"
    )
    assert json.loads(page.get_attribute("#answer", "data-tokens")) == answer["tokens"]
    assert page.inner_text("#answer") == answer["text"]
    return answer


@pytest.mark.slow
@pytest.mark.needs("chromium")
@pytest.mark.needs("node")  # npm fetches transformers.js and onnxruntime-web from the npm registry (once, cached)
def test_the_page_answers_in_chromium_with_the_runners_tokens(onnx_export, tmp_path):
    from playwright.sync_api import sync_playwright

    from llava_qwen3.serving.launcher import ServerProcess

    folder, _, processor = onnx_export
    page_folder = tmp_path / "page"
    started = time.perf_counter()
    result = write_page_command("--model", str(folder), "--output", str(page_folder), "--dtype", "q8")
    write_seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    graphs = sorted(path.name for path in (page_folder / "model" / "onnx").iterdir())
    wanted = [f"{graph}_quantized.onnx" for graph in GRAPHS]
    assert graphs == sorted([*wanted, *(f"{name}_data" for name in wanted)])  # the one dtype and its weights only
    settings = json.loads((page_folder / "demo.json").read_text())
    assert settings["dtype"] == "q8"
    assert settings["libraries"] == {package.name: package.version for package in PACKAGES}

    # Resized (61 -> 32 rows, 97 -> 50 columns) and cropped (9 columns each side): the page does both as PIL does.
    picture = tmp_path / "picture.png"
    draw_image(5, size=(97, 61)).save(picture)
    cases = [("Say something.", None), ("What is in this picture?", picture)]
    expected = [runner_tokens(folder, processor, question, path) for question, path in cases]

    screenshot = tmp_path / "browser-demo.png"
    args = ["--model", str(folder), "--backend", "onnx", "--threads", "1", "--browser-demo", str(page_folder)]
    with ServerProcess(args, log_path=tmp_path / "server.log") as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            requested = []
            page.on("request", lambda request: requested.append(request.url))
            started = time.perf_counter()
            page.goto(server.url + "/browser/?device=wasm")  # headless Chromium here has no WebGPU adapter anyway
            page.wait_for_function("window.llavaDemo.ready || window.llavaDemo.error", timeout=180_000)
            assert page.evaluate("window.llavaDemo.error") is None, page.evaluate("window.llavaDemo.error")
            load_seconds = time.perf_counter() - started
            # The server's COOP/COEP headers make the page cross-origin isolated: onnxruntime-web runs WASM threads.
            isolated, threads, cores = page.evaluate(
                "[window.crossOriginIsolated, window.llavaDemo.threads, navigator.hardwareConcurrency]"
            )
            assert isolated and threads == min(4, cores)
            answers = [ask(page, cases[0][0])]
            page.set_input_files("#file", str(picture))
            page.wait_for_selector("#preview", state="visible")
            answers.append(ask(page, cases[1][0]))
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    foreign = [url for url in requested if not url.startswith((server.url + "/browser/", "blob:", "data:"))]
    assert not foreign, f"the page fetched from elsewhere: {foreign}"
    for (tokens, pixel_values, prompt), answer, (question, _) in zip(expected, answers, cases, strict=True):
        assert answer["input_ids"] == prompt, f"{question!r}: the page's prompt ids differ from the processor's"
        if pixel_values is not None:
            difference = np.abs(np.asarray(answer["pixel_values"]) - pixel_values.reshape(-1)).max()
            assert difference < 1e-5, f"the page's pixel values differ from the processor's by up to {difference}"
        assert answer["tokens"] == tokens, f"{question!r}: the page generated other tokens than the runner"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(screenshot, ARTIFACTS / screenshot.name)
    print(
        f"page written in {write_seconds:.1f} s; loaded in Chromium in {load_seconds:.1f} s ({threads} WASM threads); "
        + "; ".join(f"{len(a['tokens'])} tokens in {a['seconds']:.2f} s" for a in answers)
    )
    print(f"browser demo screenshot: {screenshot} (and {ARTIFACTS / screenshot.name})")


@pytest.fixture
def fake_export(tiny_clip, tmp_path) -> Path:
    """A folder with an export's config, tokenizer and processor files and empty graph files of the fp32 variant:
    enough for every check before the graphs are read."""
    export = tmp_path / "fake-export"
    (export / "onnx").mkdir(parents=True)
    for name in MODEL_FILES:
        if (tiny_clip[0] / name).is_file():
            shutil.copy(tiny_clip[0] / name, export / name)
    for graph in GRAPHS:
        (export / "onnx" / f"{graph}.onnx").write_bytes(b"")
    return export


def test_the_command_refuses_bad_input_in_one_line_and_leaves_nothing(fake_export, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    no_npm = {"PATH": str(Path(sys.executable).parent), "LLAVA_QWEN3_CACHE": str(tmp_path / "empty-cache")}
    cases = [
        (["--output", str(taken), "--model", str(fake_export)], None, "exists and is not an empty folder"),
        (["--output", str(tmp_path / "a"), "--model", str(tmp_path)], None, "is not an ONNX export"),
        (["--output", str(tmp_path / "b"), "--model", str(fake_export), "--dtype", "q8"], None, "it has: fp32"),
        (["--output", str(tmp_path / "c"), "--model", str(fake_export), "--max-new-tokens", "0"], None, "at least 1"),
        (["--output", str(tmp_path / "d"), "--model", str(fake_export)], no_npm, "npm is needed to fetch @huggingface"),
    ]
    for args, env, message in cases:
        result = write_page_command(*args, env=env)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and message in lines[-1], (args, result.stderr)
        assert lines[-1].startswith("llava-qwen3-browser-demo: error: ")
    assert (taken / "keep.txt").read_text() == "mine"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty-cache", "fake-export", "taken"]
    assert [path.name for path in (tmp_path / "empty-cache").rglob("*")] == ["browser-demo"]  # no half-extracted files


@pytest.mark.needs("node")  # npm fetches the library the first time (then it comes from the cache)
def test_the_server_assembles_the_page_over_an_export_folder(onnx_export, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from llava_qwen3.serving.browser_demo import ISOLATION_HEADERS, mount_browser_demo

    folder, _, processor = onnx_export
    app = FastAPI()
    mount_browser_demo(app, folder)
    client = TestClient(app)
    for path in ("/", "/demo.js", "/vendor/transformers.min.js", "/model/onnx/decoder_model_merged_quantized.onnx"):
        answer = client.get("/browser" + path)
        assert answer.status_code == 200, path
        assert all(answer.headers[name] == value for name, value in ISOLATION_HEADERS.items()), path
    wasm = client.get("/browser/vendor/ort-wasm-simd-threaded.asyncify.wasm")
    assert wasm.headers["content-type"] == "application/wasm"
    settings = client.get("/browser/demo.json").json()
    assert settings == page_settings(folder, "q8", settings["max_new_tokens"], folder.name)
    before, after = settings["prompt"]["image"]
    expanded = user_prompt(processor, "Why?", 1).replace("<image>", "<image>" * processor.image_seq_length)
    assert before + "Why?" + after == expanded  # the chat template's prompt, placeholders expanded
    with tempfile.TemporaryDirectory() as empty, pytest.raises(ValueError, match="neither a page folder"):
        mount_browser_demo(FastAPI(), empty)


def test_the_pinned_library_versions_are_the_node_tests():
    lock = json.loads((ROOT / "tests" / "js" / "package-lock.json").read_text())["packages"]
    for package in PACKAGES:
        locked = lock[f"node_modules/{package.name}"]
        assert (package.version, package.integrity) == (locked["version"], locked["integrity"]), package.name
