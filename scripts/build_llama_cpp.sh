#!/usr/bin/env bash
# Builds llama.cpp's multimodal tools (llama-mtmd-cli, llama-server, llama-quantize) from the llama.cpp
# that the llama-cpp-python source distribution on PyPI vendors, into ~/.cache/llava-qwen3/llama.cpp-VERSION, and
# prints the folder of the executables on its last line. A rerun with the same version reuses the build.
#
# One upstream fix is applied before building: llama.cpp's LLaVA graph appends CLIP's class token after the patches
# while its inputs assume it first (https://github.com/ggml-org/llama.cpp/issues/25814, fix proposed in
# https://github.com/ggml-org/llama.cpp/pull/25844: the two operands of one concatenation swapped). Without it every
# CLIP-tower mmproj runs with each patch at its neighbour's position; SigLIP towers have no class token.
set -euo pipefail
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
cache=${LLAVA_QWEN3_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llava-qwen3}/llama.cpp-$version
targets=(llama-mtmd-cli llama-server llama-quantize)

built() { for target in "${targets[@]}"; do [[ -x $cache/build/bin/$target ]] || return 1; done; }

if ! built; then
  if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ >/dev/null
  fi
  rm -rf "$cache" && mkdir -p "$cache"
  download=$(mktemp -d)
  python3 -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$version" -d "$download"
  tar -xzf "$download"/llama_cpp_python-*.tar.gz -C "$download"
  mv "$download"/llama_cpp_python-*/vendor/llama.cpp "$cache/src"
  rm -rf "$download"
  graph=$cache/src/tools/mtmd/models/llava.cpp
  if grep -q 'ggml_concat(ctx0, inp, model.class_embedding, 1)' "$graph"; then
    sed -i 's/ggml_concat(ctx0, inp, model.class_embedding, 1)/ggml_concat(ctx0, model.class_embedding, inp, 1)/' "$graph"
    echo "applied llama.cpp#25844 (class token first) to $graph" >&2
  fi
  log=$cache/build.log
  # Built for this CPU (a cached build is used on the machine that built it), without AMX: where the kernel does not
  # grant AMX tiles to the process (virtual machines, sandboxes) llama.cpp's AMX kernels crash on Q8_0/Q4_0 weights.
  no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  if ! { cmake -S "$cache/src" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
           -DGGML_NATIVE=ON -DCMAKE_C_FLAGS="$no_amx" -DCMAKE_CXX_FLAGS="$no_amx" \
         && cmake --build "$cache/build" -j "$(nproc)" --target "${targets[@]}"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "building llama.cpp failed; the whole log is $log" >&2
    exit 1
  fi
fi
echo "$cache/build/bin"
