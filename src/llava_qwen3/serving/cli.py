"""`llava-qwen3-serve --model PATH_OR_REPO [--backend torch|onnx] [--host 127.0.0.1 --port 8000] [limits...]`: loads
the model through the inference interface and serves it with uvicorn. Every limit of `ServerLimits` is an option
(`--max-image-pixels N`). Every option's default can come from an environment variable named after it
(`--max-batch-size` from `LLAVA_QWEN3_MAX_BATCH_SIZE`, the API key from `LLAVA_QWEN3_API_KEY`), as in a container."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from ..commands import exit_on_error
from ..inference import load_backend
from ..inference.loading import add_backend_arguments, backend_options
from .app import create_app
from .limits import ServerLimits
from .service import ServerOptions

ENVIRONMENT_PREFIX = "LLAVA_QWEN3_"  # each option's variable: LLAVA_QWEN3_ and its name (MAX_BATCH_SIZE)
API_KEY_VARIABLE = ENVIRONMENT_PREFIX + "API_KEY"
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
    add_backend_arguments(parser)
    parser.add_argument(
        "--prefix-cache-mib",
        type=int,
        help=f"torch: MiB of earlier requests' KV caches kept for prompts that begin the same way, 0 for none "
        f"[{DEFAULT_PREFIX_CACHE_MIB}]",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on [8000]")
    parser.add_argument("--served-model-name", help="the model's name in the API [the model folder's name]")
    parser.add_argument("--api-key", help=f"require this key as 'Authorization: Bearer KEY' [${API_KEY_VARIABLE}]")
    parser.add_argument("--caption-prompt", default=ServerOptions.caption_prompt, help="what /caption asks the model")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument(
        "--browser-demo",
        metavar="PATH",
        help="also serve, at /browser/, the page that runs an ONNX export in the browser: a folder written by "
        "llava-qwen3-browser-demo, or an ONNX export folder",
    )
    _limit_options(parser)
    _environment_defaults(parser)
    return parser


def _environment_defaults(parser: argparse.ArgumentParser) -> None:
    """Each option's default from `LLAVA_QWEN3_<OPTION>` where set (`--max-batch-size` from
    `LLAVA_QWEN3_MAX_BATCH_SIZE`; `LLAVA_QWEN3_ALLOW_IMAGE_HOST` takes a comma-separated list); argparse converts and
    checks the text as it would the option's, and the command line still wins."""
    defaults = {}
    for action in parser._actions:
        flag = next((option for option in action.option_strings if option.startswith("--")), "--help")
        variable = ENVIRONMENT_PREFIX + flag[2:].replace("-", "_").upper()
        if flag == "--help" or not os.environ.get(variable):  # unset or empty: the built-in default
            continue
        value = os.environ[variable]
        if action.choices is not None and value not in action.choices:
            parser.error(f"{variable}={value!r}: choose from {', '.join(map(str, action.choices))}")
        if isinstance(action, argparse._AppendAction):
            value = [host.strip() for host in value.split(",") if host.strip()]
        defaults[action.dest] = value
        action.required = False
    parser.set_defaults(**defaults)


def _backend_options(args: argparse.Namespace) -> dict:
    """`load_backend`'s options from the command line: the engine's flags, and for torch the prefix cache."""
    cache_mib = args.prefix_cache_mib
    if cache_mib is None and args.backend == "torch":
        cache_mib = DEFAULT_PREFIX_CACHE_MIB
    if cache_mib is not None and cache_mib < 0:
        raise ValueError(f"--prefix-cache-mib must be 0 (none) or more, got {cache_mib}.")
    return backend_options(args, prefix_cache_bytes=None if cache_mib is None else cache_mib * 2**20)


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
    with exit_on_error(parser):
        limits = ServerLimits(**limit_values)
        options = ServerOptions(
            model_name=args.served_model_name or Path(args.model.rstrip("/")).name,
            api_key=args.api_key or os.environ.get(API_KEY_VARIABLE) or None,
            caption_prompt=args.caption_prompt,
        )
        backend = load_backend(_model_folder(args.model, args.backend), args.backend, **_backend_options(args))
    logger.info(
        "serving %s (%s on %s) on http://%s:%d", options.model_name, backend.name, backend.device, args.host, args.port
    )
    app = create_app(backend, limits, options)
    if args.browser_demo:
        from .browser_demo import BROWSER_PATH, mount_browser_demo

        with exit_on_error(parser):
            mount_browser_demo(app, args.browser_demo)
        logger.info("the browser demo on http://%s:%d%s/", args.host, args.port, BROWSER_PATH)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main(sys.argv[1:])
