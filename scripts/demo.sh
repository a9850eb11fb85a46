#!/usr/bin/env bash
# Creates .venv-demo, installs the package, trains the demo model if ./demo-checkpoint is missing (about a minute),
# and answers questions about a freshly drawn picture.
# Extra arguments go to llava-qwen3-demo (e.g. --checkpoint DIR --image FILE --question TEXT).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-demo
.venv-demo/bin/pip install -q --upgrade pip
.venv-demo/bin/pip install -q torch==2.13.0
.venv-demo/bin/pip install -q -e ".[train]"  # the demo trains its model with transformers' Trainer
.venv-demo/bin/llava-qwen3-demo "$@"
