"""The backend choice has one owner (`inference.loading`): the commands' `--backend/--variant/--device/--quantize/
--kv-cache-dtype/--threads` flags and their checks, and `load_backend`'s from Python, give the same refusals before any
model is read; the serve command's `--prefix-cache-mib` goes to the torch backend only.
"""

from __future__ import annotations

import argparse

import pytest

from llava_qwen3.evaluation.cli import main as eval_main
from llava_qwen3.inference import load_backend
from llava_qwen3.inference.loading import add_backend_arguments, backend_flags, backend_options
from llava_qwen3.serving.cli import DEFAULT_PREFIX_CACHE_MIB, _backend_options
from llava_qwen3.serving.cli import build_parser as serve_parser

pytestmark = pytest.mark.one_line

REFUSALS = [
    (["--backend", "onnx", "--quantize", "int8"], {"quantize": "int8"}, "is for the torch backend; the onnx backend"),
    (["--backend", "onnx", "--device", "cpu"], {"device": "cpu"}, "is for the torch backend; the onnx backend runs"),
    (
        ["--backend", "onnx", "--kv-cache-dtype", "bfloat16"],
        {"kv_cache_dtype": "bfloat16"},
        "is for the torch backend; the onnx backend keeps its cache",
    ),
    (["--variant", "fp32"], {"variant": "fp32"}, "picks ONNX graphs; it needs the onnx backend"),
    (["--threads", "0"], {"threads": 0}, "must be a positive number, got 0"),
]


def _engine_flags(*flags: str, threads_default: int | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_backend_arguments(parser, threads_default=threads_default)
    return parser.parse_args(list(flags))


@pytest.mark.parametrize(("flags", "options", "message"), REFUSALS)
def test_commands_and_python_refuse_the_same_options_with_the_same_message(flags, options, message, capsys):
    option = next(iter(options))
    flag = "--" + option.replace("_", "-")
    with pytest.raises(ValueError, match=f"^{flag} {message}"):
        backend_options(_engine_flags(*flags))
    backend = "onnx" if "onnx" in flags else "torch"
    with pytest.raises(ValueError, match=f"^{option} {message}"):
        load_backend("no-such-folder", backend, **options)
    with pytest.raises(SystemExit) as exit_info:
        eval_main(["no-such-folder", "data.json", *flags])
    assert exit_info.value.code == 2
    assert f"llava-qwen3-eval: error: {flag} {message}" in capsys.readouterr().err


def test_options_not_given_are_left_to_the_backend_and_flags_pass_the_choice_on():
    assert backend_options(_engine_flags()) == {}
    args = _engine_flags("--backend", "onnx", "--variant", "fp32", threads_default=1)
    assert backend_options(args) == {"variant": "fp32", "threads": 1}
    assert backend_flags(args) == ["--backend", "onnx", "--variant", "fp32", "--threads", "1"]
    server_args = serve_parser().parse_args(["--model", "folder", *backend_flags(args)])
    assert (server_args.backend, server_args.variant, server_args.threads) == ("onnx", "fp32", 1)
    args = _engine_flags("--kv-cache-dtype", "float16")
    assert backend_options(args) == {"kv_cache_dtype": "float16"}
    assert serve_parser().parse_args(["--model", "folder", *backend_flags(args)]).kv_cache_dtype == "float16"


def test_an_unknown_backend_is_refused_before_anything_is_read():
    with pytest.raises(ValueError, match="backend 'tf' is unknown; expected one of torch, onnx"):
        load_backend("no-such-folder", "tf")


def test_the_serve_command_keeps_a_prefix_cache_for_torch_only():
    def options(*flags: str) -> dict:
        return _backend_options(serve_parser().parse_args(["--model", "folder", *flags]))

    assert options() == {"prefix_cache_bytes": DEFAULT_PREFIX_CACHE_MIB * 2**20}
    assert options("--prefix-cache-mib", "0") == {"prefix_cache_bytes": 0}
    with pytest.raises(ValueError, match="--prefix-cache-mib must be 0 \\(none\\) or more, got -1"):
        options("--prefix-cache-mib", "-1")
    with pytest.raises(ValueError, match="--prefix-cache-mib is for the torch backend"):
        options("--backend", "onnx", "--prefix-cache-mib", "16")
    assert options("--backend", "onnx") == {}
