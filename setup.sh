#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: install the build and test dependencies (Debian packages
# only), build weft, and run the main job -- weft-bench all_reduce on 2 local ranks it spawns itself.
# SKIP_APT=1 skips the package step (for machines that already have them).
set -euo pipefail
cd "$(dirname "$0")"

if [ "${SKIP_APT:-0}" != "1" ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    build-essential cmake pkg-config binutils iproute2 \
    libhwloc-dev googletest libgtest-dev libgmock-dev libbenchmark-dev \
    libibverbs-dev ibverbs-utils valgrind openmpi-bin libopenmpi-dev libgloo-dev
fi

cmake --preset default
cmake --build --preset default -j"$(nproc)"
./build/bench/weft-bench all_reduce -b 8 -e 64M -f 4 -c 1
