"""The backend choice, in one place: `load_backend` picks the engine under an `InferenceBackend`, checks the options
that only one engine takes, and the commands build their `--backend/--variant/--device/--quantize/--kv-cache-dtype/
--threads` flags and those same checks from here (`add_backend_arguments`, `backend_options`).

It lives apart from `backend` because it imports the engines' modules, which import `backend` for the base class.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .backend import KV_CACHE_DTYPES, InferenceBackend
from .int8 import QUANTIZATIONS

BACKENDS = ("torch", "onnx")
# Options of the torch backend that the onnx backend has no use for, and what it does instead.
TORCH_ONLY_OPTIONS = {
    "device": "the onnx backend runs on onnxruntime's CPU provider",
    "quantize": "the onnx backend picks INT8 graphs with {variant}",
    "prefix_cache_bytes": "the onnx backend keeps no prefix cache",
    "kv_cache_dtype": "the onnx backend keeps its cache in its graphs' dtype",
}
# The options `add_backend_arguments` gives a flag each (with `--backend`).
FLAG_OPTIONS = ("variant", "device", "quantize", "kv_cache_dtype", "threads")
# How the commands spell an option (the names not listed here are `--` and the name with dashes).
FLAGS = {"prefix_cache_bytes": "--prefix-cache-mib"}


def _flag(name: str) -> str:
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def check_backend_options(backend: str, options: Mapping[str, Any], spell: Callable[[str], str] = str) -> None:
    """Refuses an unknown backend and the options (those not None) that `backend` does not take, or a thread count
    that is not positive, with a ValueError naming each option as `spell(name)` spells it."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is unknown; expected one of {', '.join(BACKENDS)}.")
    given = {name for name, value in options.items() if value is not None}
    if backend == "onnx":
        for name in sorted(given & set(TORCH_ONLY_OPTIONS)):
            instead = TORCH_ONLY_OPTIONS[name].format(variant=spell("variant"))
            raise ValueError(f"{spell(name)} is for the torch backend; {instead}.")
    elif "variant" in given:
        raise ValueError(f"{spell('variant')} picks ONNX graphs; it needs the onnx backend.")
    threads = options.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"{spell('threads')} must be a positive number, got {threads}.")


def load_backend(model: str | Path, backend: str = "torch", **options: Any) -> InferenceBackend:
    """The backend `backend` ("torch" or "onnx") over the checkpoint or export at `model`.

    `threads` sets how many CPU threads the engine uses (for torch, the process' thread count). The other options go
    to the backend's `from_pretrained`: for "torch", `device`, `dtype`, `quantize` (one of `QUANTIZATIONS`),
    `prefix_cache_bytes` (reuse of earlier prompts' KV caches), `kv_cache_dtype` (one of `KV_CACHE_DTYPES`) and any
    `from_pretrained` argument of the model; for "onnx", `variant` (default "quantized", the INT8 graphs) and
    onnxruntime's `providers` and `session_options`.
    An option of the other backend is refused with the message the commands give for its flag.
    """
    check_backend_options(backend, options)
    options = {name: value for name, value in options.items() if value is not None}
    threads = options.pop("threads", None)
    if backend == "torch":
        import torch

        from .torch_backend import TorchBackend

        if threads is not None:
            torch.set_num_threads(threads)
        return TorchBackend.from_pretrained(model, **options)
    from .onnx_backend import OnnxBackend

    if threads is not None:
        import onnxruntime

        options["session_options"] = options.get("session_options") or onnxruntime.SessionOptions()
        options["session_options"].intra_op_num_threads = threads
    return OnnxBackend.from_pretrained(model, **options)


def add_backend_arguments(parser: argparse.ArgumentParser, threads_default: int | None = None) -> None:
    """The flags that choose and set up the engine: `--backend`, `--variant` (onnx), `--device`, `--quantize` and
    `--kv-cache-dtype` (torch), `--threads`."""
    threads_default_text = threads_default or "the engine's default: one per core"
    group = parser.add_argument_group("engine")
    group.add_argument("--backend", choices=BACKENDS, default="torch", help="the engine [torch]")
    group.add_argument("--variant", help="onnx: the graphs to run, quantized (INT8, default), fp32, q4, ...")
    group.add_argument("--device", help="torch: cpu, cuda, ... [cuda where present, else cpu]")
    group.add_argument("--quantize", choices=QUANTIZATIONS, help="torch on CPU: INT8 linear layers [none: as saved]")
    group.add_argument(
        "--kv-cache-dtype",
        choices=KV_CACHE_DTYPES,
        help="torch on CPU: the KV cache's dtype; bfloat16 or float16 halve an fp32 model's cache, not exactly "
        "[the weights']",
    )
    group.add_argument(
        "--threads",
        type=int,
        default=threads_default,
        help=f"CPU threads the engine uses [{threads_default_text}]",
    )


def backend_options(args: argparse.Namespace, **more: Any) -> dict[str, Any]:
    """`load_backend`'s options from the flags of `add_backend_arguments` (and `more`), those given only, checked as
    `load_backend` checks them with the messages naming the flags."""
    options = {name: getattr(args, name) for name in FLAG_OPTIONS}
    options = {name: value for name, value in {**options, **more}.items() if value is not None}
    check_backend_options(args.backend, options, spell=_flag)
    return options


def backend_flags(args: argparse.Namespace) -> list[str]:
    """The flags of `add_backend_arguments` that give another command (a server the benchmark starts) the same
    choice."""
    flags = ["--backend", args.backend]
    for name in FLAG_OPTIONS:
        if getattr(args, name) is not None:
            flags += [_flag(name), str(getattr(args, name))]
    return flags
