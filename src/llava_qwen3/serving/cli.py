"""`llava-qwen3-serve --model PATH_OR_REPO [--backend torch|onnx] [--host 127.0.0.1 --port 8000] [limits...]`: loads
the model through the inference interface and serves it with uvicorn. Every limit of `ServerLimits` is an option
(`--max-image-pixels N`); the API key comes from `--api-key` or the `LLAVA_QWEN3_API_KEY` environment variable."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from ..inference import BACKENDS, QUANTIZATIONS, load_backend
from .app import create_app
from .limits import ServerLimits
from .service import ServerOptions

API_KEY_VARIABLE = "LLAVA_QWEN3_API_KEY"
DEFAULT_PREFIX_CACHE_MIB = 256  # the torch backend's prefix cache: about 1,170 tokens of Qwen3-0.6B's fp32 KV cache
logger = logging.getLogger(__name__)


def _limit_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits (defaults in brackets)")
    for item in dataclasses.fields(ServerLimits):
        flag = "--" + item.name.replace("_", "-")
        if item.name == "allowed_image_hosts":
            group.add_argument(
                "--allow-image-host",
                dest=item.name,
                action="append",
                default=[],
                metavar="HOST[:PORT]",
                help=item.metadata["help"],
            )
        else:
            kind = int if isinstance(item.default, int) else float
            group.add_argument(flag, type=kind, default=item.default, help=f"{item.metadata['help']} [{item.default}]")


def build_parser() -> argparse.ArgumentParser:
    """The command's options."""
    parser = argparse.ArgumentParser(
        prog="llava-qwen3-serve", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub repo id (an ONNX export for onnx)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help="the engine [torch]")
    parser.add_argument("--variant", help="ONNX graphs: quantized (INT8, default), fp32 or q4")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda [cuda where present, else cpu]")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, help="torch on CPU: INT8 linear layers [none: as saved]")
    parser.add_argument(
        "--prefix-cache-mib",
        type=int,
        help=f"torch: MiB of earlier requests' KV caches kept for prompts that begin the same way, 0 for none "
        f"[{DEFAULT_PREFIX_CACHE_MIB}]",
    )
    parser.add_argument(
        "--threads", type=int, help="CPU threads the engine uses for a batch [the engine's default: one per core]"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on [8000]")
    parser.add_argument("--served-model-name", help="the model's name in the API [the model folder's name]")
    parser.add_argument("--api-key", help=f"require this key as 'Authorization: Bearer KEY' [${API_KEY_VARIABLE}]")
    parser.add_argument("--caption-prompt", default=ServerOptions.caption_prompt, help="what /caption asks the model")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    _limit_options(parser)
    return parser


def _backend_options(args: argparse.Namespace) -> dict:
    """`load_backend`'s options from the command line (for torch, `--threads` sets the process' thread count)."""
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be a positive number, got {args.threads}.")
    if args.backend == "onnx":
        if args.device is not None:
            raise ValueError("--device is for the torch backend; the onnx backend runs on onnxruntime's CPU provider.")
        if args.quantize is not None:
            raise ValueError("--quantize is for the torch backend; the onnx backend picks INT8 graphs with --variant.")
        if args.prefix_cache_mib is not None:
            raise ValueError("--prefix-cache-mib is for the torch backend; the onnx backend keeps no prefix cache.")
        options = {} if args.variant is None else {"variant": args.variant}
        if args.threads is not None:
            import onnxruntime

            options["session_options"] = onnxruntime.SessionOptions()
            options["session_options"].intra_op_num_threads = args.threads
        return options
    if args.variant is not None:
        raise ValueError("--variant picks ONNX graphs; it needs --backend onnx.")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    cache_mib = DEFAULT_PREFIX_CACHE_MIB if args.prefix_cache_mib is None else args.prefix_cache_mib
    if cache_mib < 0:
        raise ValueError(f"--prefix-cache-mib must be 0 (none) or more, got {cache_mib}.")
    options = {"prefix_cache_bytes": cache_mib * 2**20}
    if args.device is not None:
        options["device"] = args.device
    return options if args.quantize is None else {**options, "quantize": args.quantize}


def _model_folder(model: str, backend: str) -> str:
    """A local folder for `model`; the onnx backend reads folders only, so a repo id is downloaded (or taken from
    the Hub cache) first."""
    if backend != "onnx" or Path(model).is_dir():
        return model
    from huggingface_hub import snapshot_download

    return snapshot_download(model)


def main(argv: list[str] | None = None) -> None:
    """Parses the options, loads the model and serves it until interrupted."""
    import uvicorn

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limit_values = {item.name: getattr(args, item.name) for item in dataclasses.fields(ServerLimits)}
    try:
        limits = ServerLimits(**limit_values)
        options = ServerOptions(
            model_name=args.served_model_name or Path(args.model.rstrip("/")).name,
            api_key=args.api_key or os.environ.get(API_KEY_VARIABLE) or None,
            caption_prompt=args.caption_prompt,
        )
        backend_options = _backend_options(args)
        backend = load_backend(_model_folder(args.model, args.backend), args.backend, **backend_options)
    except (ValueError, OSError) as error:
        parser.exit(2, f"llava-qwen3-serve: error: {error}\n")
    logger.info(
        "serving %s (%s on %s) on http://%s:%d", options.model_name, backend.name, backend.device, args.host, args.port
    )
    uvicorn.run(create_app(backend, limits, options), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main(sys.argv[1:])
