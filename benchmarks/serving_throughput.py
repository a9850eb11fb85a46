"""Throughput of `llava-qwen3-serve` at 1, 8 and 32 concurrent clients (or `--concurrency`), in one run against one
server process.

Each client sends the same number of chat completions, one after another (a picture of shapes as a data URL and a
question, greedy, `max_tokens` fixed); throughput is requests and generated tokens per second of wall time over all
clients. The yardstick is the one-client run of the same server in the same run: the ratios say how much dynamic
batching gains. Without `--model` the demo model is trained first (about a minute or two), as `llava-qwen3-demo` does;
with `--random-model` a tiny random model that never stops early is built instead, so that every answer is
`max_tokens` long (the cost of long answers: `--random-model --max-tokens 512`).

    python benchmarks/serving_throughput.py [--model DIR | --random-model] [--backend torch|onnx] [--variant fp32]
                                            [--threads 1] [--requests 8] [--max-tokens 16] [--concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import platform
import tempfile
import time
from pathlib import Path

import httpx

from llava_qwen3.inference.loading import add_backend_arguments, backend_flags, backend_options
from llava_qwen3.serving import ServerLimits
from llava_qwen3.serving.launcher import ServerProcess
from llava_qwen3.training.synthetic import QUESTIONS, draw_scene, random_scenes

CONCURRENCY = (1, 8, 32)


def random_model(folder: Path, max_tokens: int) -> Path:
    """A tiny random checkpoint whose answers run to `max_tokens` (no end-of-sequence id, context to spare)."""
    from llava_qwen3.conversion.tiny import build_tiny_checkpoint

    model, _ = build_tiny_checkpoint(folder, text_overrides={"max_position_embeddings": max_tokens + 256})
    model.generation_config.eos_token_id = None
    model.generation_config.save_pretrained(folder)
    return folder


def request_bodies(count: int, max_tokens: int) -> list[dict]:
    """`count` different chat completion requests: fresh pictures, the three shape questions in turn."""
    bodies = []
    questions = list(QUESTIONS.values())
    for index, scene in enumerate(random_scenes(count, "train", seed=123)):
        buffer = io.BytesIO()
        draw_scene(scene).save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": questions[index % 3]}]
        bodies.append({"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens})
    return bodies


async def run_clients(url: str, clients: int, per_client: int, bodies: list[dict]) -> dict[str, float]:
    """Requests/s, tokens/s and errors of `clients` concurrent clients sending `per_client` requests each."""
    tokens = errors = 0

    async def client(number: int, session: httpx.AsyncClient) -> None:
        nonlocal tokens, errors
        for request in range(per_client):
            body = bodies[(number * per_client + request) % len(bodies)]
            response = await session.post("/v1/chat/completions", json=body)
            if response.status_code == 200:
                tokens += response.json()["usage"]["completion_tokens"]
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(number, session) for number in range(clients)))
        seconds = time.perf_counter() - started
    requests = clients * per_client
    return {
        "requests": requests,
        "seconds": seconds,
        "rps": requests / seconds,
        "tps": tokens / seconds,
        "errors": errors,
    }


def machine() -> str:
    """The CPU's model name and count."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())
    return f"{name}, {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint folder (or ONNX export with --backend onnx); default: train one")
    add_backend_arguments(parser, threads_default=1)  # the server's engine; the clients need the other cores
    parser.add_argument("--requests", type=int, default=16, help="requests per client [16]")
    parser.add_argument("--batch-wait-ms", type=float, default=ServerLimits.batch_wait_ms, help="the server's option")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens of every request [16]")
    parser.add_argument("--random-model", action="store_true", help="a random model whose answers are max_tokens long")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=list(CONCURRENCY), help="concurrent clients of each run [1 8 32]"
    )
    args = parser.parse_args()
    if 1 not in args.concurrency:
        parser.error("--concurrency must include 1: the one-client run is the yardstick.")
    if args.random_model and (args.model or args.backend == "onnx"):
        parser.error("--random-model builds a torch checkpoint; it takes neither --model nor --backend onnx.")
    try:
        backend_options(args)  # the server would refuse them, after the demo model's training
    except ValueError as error:
        parser.error(str(error))

    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if args.random_model:
            model = str(random_model(Path(scratch) / "random", args.max_tokens))
        elif model is None:
            from llava_qwen3.training.shapes_recipe import train_on_shapes

            print("training the demo model ...", flush=True)
            trained, processor = train_on_shapes(output=Path(scratch) / "demo")
            model = str(Path(scratch) / "demo")
            if args.backend == "onnx":
                from llava_qwen3.conversion.export_onnx import export_onnx

                model = str(export_onnx(trained, Path(scratch) / "onnx", processor=processor, quantize=("quantized",)))
        server_args = ["--model", model, *backend_flags(args)]
        server_args += ["--max-batch-size", "32", "--max-queue", "256", "--batch-wait-ms", str(args.batch_wait_ms)]
        server_args += ["--max-tokens", str(max(args.max_tokens, ServerLimits.max_tokens))]
        bodies = request_bodies(64, args.max_tokens)
        with ServerProcess(server_args, log_path=Path(scratch) / "server.log") as server:
            asyncio.run(run_clients(server.url, 2, 2, bodies))  # warm-up
            results = {
                clients: asyncio.run(run_clients(server.url, clients, args.requests, bodies))
                for clients in sorted(args.concurrency)
            }

    print(f"\nmachine: {machine()}, Python {platform.python_version()}")
    print(f"backend: {args.backend}{' ' + args.variant if args.variant else ''}, max_tokens {args.max_tokens}")
    print(f"{'clients':>7} {'requests':>8} {'seconds':>8} {'requests/s':>10} {'tokens/s':>9} {'errors':>6} {'vs 1':>6}")
    for clients, result in results.items():
        ratio = result["rps"] / results[1]["rps"]
        print(
            f"{clients:>7} {result['requests']:>8} {result['seconds']:>8.2f} {result['rps']:>10.1f} "
            f"{result['tps']:>9.1f} {result['errors']:>6} {ratio:>5.1f}x"
        )
    if 8 in results:
        print(f"throughput at 8 clients / at 1 client: {results[8]['rps'] / results[1]['rps']:.1f}x (target >= 3x)")


if __name__ == "__main__":
    main()
