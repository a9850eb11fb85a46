#!/usr/bin/env bash
# Creates one virtual environment per transformers line (5.x and 4.57.x), installs the package with its test
# extras and the Node project of the transformers.js test, lints, checks that checkpoints cross between the lines,
# and runs the test suite on both (the one_line tests, end-to-end tests of parts above the model, on 5 only).
set -euo pipefail
cd "$(dirname "$0")/.."

make_venv() {  # make_venv DIR TRANSFORMERS_SPEC
  python3 -m venv "$1"
  "$1/bin/pip" install -q --upgrade pip
  "$1/bin/pip" install -q torch==2.13.0  # the CPU build; must come before anything that pulls torch in
  "$1/bin/pip" install -q -e ".[dev,train,onnx,eval,serve]" "$2"
  bash scripts/install_lmms_eval.sh "$1"
}

# Both at once: installing is mostly waiting on disk, and CI has two cores.
make_venv .venv-test "transformers>=5,<6" &
make_venv .venv-test-457 "transformers==4.57.*" &
wait -n  # each fails the script (set -e) if its install failed
wait -n

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

echo "== pytest on transformers 4.57 (the one_line tests run on transformers 5 only)"
.venv-test-457/bin/python -m pytest -q -rs -p no:cacheprovider -m "not one_line"
echo "== pytest on transformers 5"
.venv-test/bin/python -m pytest -q -rs -p no:cacheprovider
