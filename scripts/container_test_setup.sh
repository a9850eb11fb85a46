#!/usr/bin/env bash
# The setup of the container test (tests/test_container.py; scripts/test.sh runs this before pytest): a running Docker
# engine, a base image standing in for python:3.11-slim and a wheelhouse of torch's CPU build, for a machine that
# reaches the package registries (PyPI, Debian's) but no image registry.
#   - Debian's docker.io (the engine, whose client builds with BuildKit without buildx) and mmdebstrap, where missing;
#   - dockerd started in the background where no engine answers (its log: ~/.cache/llava-qwen3/container/dockerd.log);
#   - the base image llava-qwen3-test-base:bookworm: Debian bookworm's python3 (3.11), python3-venv and ca-certificates
#     made with mmdebstrap and imported with `docker import`;
#   - the wheelhouse image llava-qwen3-test-wheelhouse:torch-VERSION: torch's CPU build and its dependencies (pip
#     download), given to deploy/Dockerfile as its WHEELHOUSE so the build never fetches torch's CUDA build.
# The base image's tarball and the wheelhouse are kept in ~/.cache/llava-qwen3/container, so a rerun (or a fresh Docker
# engine) takes seconds. Usage: bash scripts/container_test_setup.sh [PYTHON] (the Python whose pip downloads the
# wheels; default python3); bash scripts/container_test_setup.sh --stop stops the dockerd it started, if any.
set -euo pipefail
python=${1:-python3}
torch_version=2.13.0
cache="${LLAVA_QWEN3_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llava-qwen3}/container"
if [ "$python" = --stop ]; then
  if [ -s "$cache/dockerd.pid" ] && kill "$(cat "$cache/dockerd.pid")" 2>/dev/null; then
    for _ in $(seq 30); do kill -0 "$(cat "$cache/dockerd.pid")" 2>/dev/null || break; sleep 1; done
  fi
  rm -f "$cache/dockerd.pid"
  exit 0
fi
base_image=llava-qwen3-test-base:bookworm
wheelhouse_image=llava-qwen3-test-wheelhouse:torch-$torch_version
mkdir -p "$cache"

if ! command -v dockerd >/dev/null || ! command -v mmdebstrap >/dev/null || [ ! -x /usr/bin/docker ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io mmdebstrap >/dev/null
fi
docker=/usr/bin/docker  # Debian's client: BuildKit built in (a newer client on the PATH may need buildx)

if ! "$docker" info >/dev/null 2>&1; then
  echo "starting dockerd (log: $cache/dockerd.log)" >&2
  nohup dockerd >"$cache/dockerd.log" 2>&1 </dev/null &
  echo $! >"$cache/dockerd.pid"
  for _ in $(seq 60); do
    "$docker" info >/dev/null 2>&1 && break
    sleep 1
  done
  "$docker" info >/dev/null || { tail -n 20 "$cache/dockerd.log" >&2; exit 1; }
fi

if ! "$docker" image inspect "$base_image" >/dev/null 2>&1; then
  if [ ! -s "$cache/base-bookworm.tar" ]; then
    echo "making the base image with mmdebstrap" >&2
    mmdebstrap --quiet --format=tar --variant=minbase --include=python3,python3-venv,ca-certificates \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      bookworm "$cache/base-bookworm.tar.part" \
      "deb http://deb.debian.org/debian bookworm main" \
      "deb http://deb.debian.org/debian bookworm-updates main" \
      "deb http://deb.debian.org/debian-security bookworm-security main"
    mv "$cache/base-bookworm.tar.part" "$cache/base-bookworm.tar"
  fi
  "$docker" import --change 'CMD ["python3"]' "$cache/base-bookworm.tar" "$base_image" >/dev/null
fi

wheels="$cache/wheelhouse-torch-$torch_version"
if ! ls "$wheels"/torch-"$torch_version"+cpu-*.whl >/dev/null 2>&1; then
  echo "downloading torch $torch_version's CPU build and its dependencies" >&2
  rm -rf "$wheels.part"
  # Where the package index serves the CPU build (as here) from it, else from PyPI and PyTorch's CPU index.
  "$python" -m pip download -q --only-binary=:all: -d "$wheels.part" "torch==$torch_version+cpu" ||
    "$python" -m pip download -q --only-binary=:all: -d "$wheels.part" \
      --extra-index-url https://download.pytorch.org/whl/cpu "torch==$torch_version+cpu"
  rm -rf "$wheels"
  mv "$wheels.part" "$wheels"
fi
if ! "$docker" image inspect "$wheelhouse_image" >/dev/null 2>&1; then
  printf 'FROM scratch\nCOPY . /\n' | DOCKER_BUILDKIT=1 "$docker" build -q -t "$wheelhouse_image" -f - "$wheels" >/dev/null
fi
echo "docker engine $("$docker" version --format '{{.Server.Version}}'), $base_image, $wheelhouse_image" >&2
