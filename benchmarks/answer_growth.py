"""How the cost of a token grows with the answer: the torch and ONNX backends against transformers' `generate`.

One random-weight model (Qwen3-0.6B's layer sizes, `--layers` of them, a byte-level BPE tokenizer; nothing is
downloaded) answers one prompt with `--new-tokens` tokens (end-of-sequence turned off, so every answer is that long),
through transformers' own `generate` (the yardstick), the torch backend (what the server and the generator run) and
the ONNX backend, in turns, in one process. Each token is stamped as it is produced (`generate`'s streamer, the
backends' per-step `is_cancelled` hook); the growth of each is the mean time per token of the last `--window` tokens
over that of the first `--window` (after the first token). A backend that re-did per-token work over the whole answer
(detokenizing it again, copying it back and forth) grows faster than `generate`; the ratio of the two growths says
by how much (target: within 1.2x).

    python benchmarks/answer_growth.py [--new-tokens 1024] [--layers 4] [--window 128] [--no-onnx] [--json FILE]

`--quick` runs a tiny model for 64 tokens in seconds (the test suite runs it so the script cannot rot).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from llava_qwen3.conversion.tiny import build_tiny_checkpoint
from llava_qwen3.inference import GenerationRequest, GenerationSettings
from llava_qwen3.inference.loading import load_backend

from full_size import QWEN3_0_6B, TokenClock

QWEN3_LAYER_SIZES = {
    name: QWEN3_0_6B[name]
    for name in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim")
}
QUESTION = "Describe every shape in the picture, its colour and where it is, one after another, in detail."


def build_model(folder: Path, layers: int, new_tokens: int, quick: bool) -> Path:
    """A random checkpoint (with its processor) that never stops before `new_tokens`."""
    text = {} if quick else {**QWEN3_LAYER_SIZES, "num_hidden_layers": layers}
    text["max_position_embeddings"] = new_tokens + 256
    model, _ = build_tiny_checkpoint(folder, seed=0, text_overrides=text)
    model.generation_config.eos_token_id = None  # random weights would stop at whatever the end-of-text id is
    model.generation_config.save_pretrained(folder)
    return folder


def export(folder: Path, output: Path) -> Path:
    from llava_qwen3.conversion.export_onnx import export_onnx

    return Path(export_onnx(str(folder), output, quantize=()))


def generate_stamps(backend, new_tokens: int) -> list[float]:
    """Token times of transformers' `generate` on the torch backend's model and inputs (the first is the prompt)."""
    record = prompt_record(backend.processor)
    inputs = backend.processor.process_records(record, return_tensors="pt")
    clock = TokenClock()
    with torch.inference_mode():
        backend.model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            streamer=clock,
        )
    return clock.stamps


def backend_stamps(backend, new_tokens: int) -> list[float]:
    """Token times of a backend answering the same prompt: its `is_cancelled` hook is asked once a step."""
    stamps = [time.perf_counter()]

    def stamp() -> bool:
        stamps.append(time.perf_counter())
        return False

    request = GenerationRequest(
        prompt_record(backend.processor), GenerationSettings(max_new_tokens=new_tokens), is_cancelled=stamp
    )
    (generation,) = backend.generate([request])
    stamps.append(time.perf_counter())
    if generation.completion_tokens != new_tokens:
        raise RuntimeError(f"the backend answered {generation.completion_tokens} tokens, not {new_tokens}")
    return stamps


def prompt_record(processor) -> dict:
    messages = [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    return {"text": processor.apply_chat_template(messages, add_generation_prompt=True)}


def growth(stamps: list[float], window: int) -> dict[str, float]:
    """Mean seconds per token of the first and last `window` tokens (the first token, the prefill, left out) and
    their ratio."""
    steps = [later - earlier for earlier, later in itertools.pairwise(stamps[1:])]
    first, last = statistics.fmean(steps[:window]), statistics.fmean(steps[-window:])
    return {"first_ms": first * 1e3, "last_ms": last * 1e3, "growth": last / first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=1024, help="tokens of the answer [1024]")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of Qwen3-0.6B's size [4]")
    parser.add_argument("--window", type=int, default=128, help="tokens averaged at each end [128]")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, in turns; the median growth [3]")
    parser.add_argument("--no-onnx", action="store_true", help="leave the ONNX backend out")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--quick", action="store_true", help="a tiny model and 64 tokens, for the tests")
    args = parser.parse_args()
    if args.quick:
        args.new_tokens, args.window, args.repeats = 64, 16, 1
    if args.new_tokens < 2 * args.window + 1:
        parser.error(f"--new-tokens must be at least 2 x --window + 1 ({2 * args.window + 1}).")

    with tempfile.TemporaryDirectory() as scratch:
        print(f"building a random model ({args.layers} Qwen3-0.6B layers) ...", flush=True)
        folder = build_model(Path(scratch) / "model", args.layers, args.new_tokens, args.quick)
        torch_backend = load_backend(folder, "torch")
        runs = {"transformers generate": lambda: generate_stamps(torch_backend, args.new_tokens)}
        runs["torch backend"] = lambda: backend_stamps(torch_backend, args.new_tokens)
        if not args.no_onnx:
            print("exporting it to ONNX ...", flush=True)
            onnx_backend = load_backend(export(folder, Path(scratch) / "onnx"), "onnx", variant="fp32")
            runs["onnx backend"] = lambda: backend_stamps(onnx_backend, args.new_tokens)
        measured: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
        for repeat in range(args.repeats):
            for name, run in runs.items():
                print(f"[{repeat + 1}/{args.repeats}] {name}: {args.new_tokens} tokens ...", flush=True)
                measured[name].append(growth(run(), args.window))

    # The run of median growth (the lower middle one of an even count) of each.
    results = {
        name: sorted(runs, key=lambda run: run["growth"])[(len(runs) - 1) // 2] for name, runs in measured.items()
    }
    yardstick = results["transformers generate"]["growth"]
    print(f"\n{args.new_tokens}-token answer, mean time per token of the first and last {args.window} tokens:")
    print(f"{'':<22} {'first ms':>9} {'last ms':>9} {'growth':>7} {'vs generate':>11}")
    for name, result in results.items():
        result["growth_vs_generate"] = result["growth"] / yardstick
        print(
            f"{name:<22} {result['first_ms']:>9.2f} {result['last_ms']:>9.2f} {result['growth']:>6.2f}x "
            f"{result['growth_vs_generate']:>10.2f}x"
        )
    print("target: each backend's growth within 1.2x of generate's")
    if args.json:
        settings = {"new_tokens": args.new_tokens, "layers": args.layers, "window": args.window}
        args.json.write_text(json.dumps({"settings": settings, "results": results}, indent=2))


if __name__ == "__main__":
    main()
