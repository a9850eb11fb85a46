#!/usr/bin/env bash
# Installs lmms-eval into the virtual environment VENV for the harness test (tests/test_lmms_eval.py).
# Without its declared dependencies: they include torchvision, which has no build beside the torch this project tests
# with, and video, audio and API clients that a local image task never imports. What lmms-eval's command line imports
# to run a generation task is installed by name.
set -euo pipefail
venv="$1"
"$venv/bin/pip" install -q --no-deps "lmms-eval==0.7.3"
"$venv/bin/pip" install -q loguru sacrebleu evaluate pytz tenacity pytablewriter
# lmms-eval 0.7.3's evaluator imports filelock._api, a module filelock 4 no longer has (it declares no bound).
"$venv/bin/pip" install -q "filelock<4"
