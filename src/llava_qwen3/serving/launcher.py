"""`llava-qwen3-serve` in a child process on a free loopback port, for the tests, the throughput benchmark and
notebooks:

    with ServerProcess(["--model", "checkpoint"]) as server:
        httpx.get(server.url + "/health")

The context waits until `/health` answers, and always stops the process (terminate, then kill) when it ends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nothing listens on at the moment, on the loopback interface."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class ServerProcess:
    """A server in a child process (see the module docstring); `args` are `llava-qwen3-serve`'s options except
    `--host` and `--port`."""

    def __init__(
        self,
        args: list[str],
        log_path: str | Path | None = None,
        start_timeout_s: float = 300.0,
        env: dict | None = None,
    ) -> None:
        self.args = list(args)
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        if log_path is None:
            handle, log_path = tempfile.mkstemp(prefix="llava-qwen3-serve-", suffix=".log")
            os.close(handle)
        self.log_path = Path(log_path)
        self.start_timeout_s = start_timeout_s
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Starts the process and returns once `/health` answers; a RuntimeError with the log if it does not."""
        command = [sys.executable, "-m", "llava_qwen3.serving", *self.args, "--host", HOST, "--port", str(self.port)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer /health within {self.start_timeout_s} s:\n{self.log()}")

    def stop(self) -> None:
        """Stops the process: SIGTERM (uvicorn shuts down gracefully), then SIGKILL after 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        """What the server has written so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
