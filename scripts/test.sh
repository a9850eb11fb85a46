#!/usr/bin/env bash
# Creates one virtual environment per transformers line (5.x and 4.57.x), installs the package with its test
# extras, the Node project of the transformers.js test, llama.cpp's tools (scripts/build_llama_cpp.sh) and a Docker
# engine (scripts/container_test_setup.sh), lints, checks that checkpoints cross between the lines, and runs the test
# suite on both (the one_line tests, end-to-end tests of parts above the model, on 5 only).
set -euo pipefail
cd "$(dirname "$0")/.."
# This script installs every optional part the tests need (tests/helpers.py: OPTIONAL_PARTS), so a missing one fails
# its tests instead of skipping them.
export LLAVA_QWEN3_REQUIRE_OPTIONAL=1

make_venv() {  # make_venv DIR TRANSFORMERS_SPEC
  python3 -m venv "$1"
  "$1/bin/pip" install -q --upgrade pip
  "$1/bin/pip" install -q torch==2.13.0  # the CPU build; must come before anything that pulls torch in
  "$1/bin/pip" install -q -e ".[dev]" "$2"  # dev brings every extra the tests import
  bash scripts/install_lmms_eval.sh "$1"
}

# All three at once: installing is mostly waiting on disk and the network, compiling llama.cpp's tools (for the GGUF
# tests; cached in ~/.cache/llava-qwen3 after the first run) keeps the two cores busy meanwhile.
llama_cpp_bin=$(mktemp)
make_venv .venv-test "transformers>=5,<6" &
make_venv .venv-test-457 "transformers==4.57.*" &
bash scripts/build_llama_cpp.sh >"$llama_cpp_bin" &
wait -n  # each fails the script (set -e) if it failed
wait -n
wait -n
PATH="$(tail -n 1 "$llama_cpp_bin"):$PATH"
export PATH
rm "$llama_cpp_bin"

# transformers.js for the test that loads an ONNX export in Node. onnxruntime-node's install script would only fetch
# GPU binaries from NuGet; its CPU binaries ship in the npm package.
command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
(cd tests/js && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error)

# Java for pycocoevalcap's PTB tokenizer and METEOR (the captioning metrics).
command -v java >/dev/null || { apt-get update -qq && apt-get install -y -qq default-jre-headless; }

# Debian's Chromium for the serving web page test (driven by playwright's Python client, which never downloads a
# browser) and curl for its multipart requests.
if ! command -v chromium >/dev/null || ! command -v curl >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium curl
fi

# Docker for the container test (tests/test_container.py): Debian's docker.io, dockerd started where none runs, and
# the base image and torch wheelhouse its build uses where no image registry is reachable (cached in ~/.cache).
bash scripts/container_test_setup.sh .venv-test/bin/python
trap 'bash scripts/container_test_setup.sh --stop' EXIT  # stops the engine again if the setup started it

echo "== ruff"
.venv-test/bin/ruff check src tests benchmarks
.venv-test/bin/ruff format --check src tests benchmarks

echo "== checkpoints cross between transformers lines"
cross=$(mktemp -d)
.venv-test/bin/python tests/cross_line_check.py write "$cross/from5"
.venv-test-457/bin/python tests/cross_line_check.py verify "$cross/from5"
.venv-test-457/bin/python tests/cross_line_check.py write "$cross/from457"
.venv-test/bin/python tests/cross_line_check.py verify "$cross/from457"
rm -rf "$cross"

# tests/vllm_plugin needs vLLM's own environment: scripts/test_vllm.sh runs it.
echo "== pytest on transformers 4.57 (the one_line tests run on transformers 5 only)"
.venv-test-457/bin/python -m pytest -q -rs -p no:cacheprovider --ignore=tests/vllm_plugin -m "not one_line"
echo "== pytest on transformers 5"
.venv-test/bin/python -m pytest -q -rs -p no:cacheprovider --ignore=tests/vllm_plugin
