#!/usr/bin/env bash
# device-check.sh: the GPU proof of device buffers, in one run of a few minutes.
#   On a GPU machine: prints the machine (nvidia-smi, driver and CUDA versions, ldd of every binary,
#   MPS, which it starts), then runs the bundle's device tests (ranks as threads and as processes)
#   and the benchmarks: weft-device-bench (the floor: an empty graph-launched kernel; a D2D copy vs
#   weft's reduction kernel at 256 MiB) and weft-bench all_reduce --device, bf16 sum from 16 KiB to
#   256 MiB (x4: 16K 64K 256K 1M 4M 16M 64M 256M), 2 ranks sharing the GPU as threads (-t 2) and
#   as processes (MPS), eager and captured in CUDA graphs (-G), every result checked (-c 1).
#   Without a GPU (CI, developer machines): builds the bundle (a dry run) and prints a SKIP line.
# The bundle is build-device/bundle (cmake --build build --target device-bundle, or this script);
# carry it to the GPU machine. WEFT_BUNDLE_DIR overrides its place; DEVICE_CHECK_NO_BUILD=1 skips
# building it.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bundle=${WEFT_BUNDLE_DIR:-$root/build-device/bundle}

build_bundle() {
  cmake -S "$root" -B "$root/build-device" -DCMAKE_BUILD_TYPE=Release -DWEFT_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DWEFT_BUNDLE=ON -DWEFT_BUILD_EXAMPLES=OFF -DWEFT_BUILD_BENCH=ON >/dev/null &&
    cmake --build "$root/build-device" --target weft-device-bundle-files -j"${JOBS:-2}"
}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  if [ "${DEVICE_CHECK_NO_BUILD:-0}" != "1" ]; then
    build_bundle || { echo "device-check: building the bundle FAILED"; exit 1; }
  fi
  echo "SKIP device-check: no NVIDIA GPU or driver on $(hostname): GPU tests and benchmarks NOT run (bundle: $bundle)"
  exit 0
fi

# libhwloc in the bundle needs libudev, which the bundle carries too.
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "== machine"
date -u
nvidia-smi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
echo "CUDA (driver API) version: $(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p')"
uname -r
echo "== binaries ($bundle)"
for f in "$bundle"/bin/* "$bundle"/lib/*; do
  echo "-- ldd $f"
  ldd "$f"
done
status=0
run() {
  echo "== $*"
  local t0 t1 rc
  t0=$(date +%s%N)
  # (line-buffered, so that a crash still shows how far the program got)
  timeout "${STEP_TIMEOUT:-240}" stdbuf -oL -eL "$@"
  rc=$?
  t1=$(date +%s%N)
  echo "-- exit $rc after $(( (t1 - t0) / 1000000 )) ms"
  [ $rc -eq 0 ] || status=1
}
# Part 1, without MPS: every rank a thread of one process (so a failure to start MPS cannot hide
# these results).
run "$bundle/bin/weft-device-kernel-test"
run "$bundle/bin/weft-device-test"
# Every collective, send/recv, all-to-all, groups, registration, graph replays: ranks as threads.
run "$bundle/bin/weft-device-coll-test" threads 2
# The two-shot all-reduce forced for every size, several staging rounds, 3 ranks.
run env WEFT_CUDA_TWOSHOT_BYTES=1 WEFT_CUDA_STAGE_BYTES=65536 "$bundle/bin/weft-device-coll-test" threads 3 coll graph
# Send/recv rings where "next" and "previous" are different peers (4 thread ranks), in groups.
run "$bundle/bin/weft-device-coll-test" threads 4 p2p group
# Host buffers with every GPU hidden (CUDA_VISIBLE_DEVICES=""): the host path never needs CUDA.
run env CUDA_VISIBLE_DEVICES= "$bundle/bin/weft-bench" all_reduce --ranks 2 -b 8 -e 1M -f 32 -n 20 -w 2 -c 1 -d all -o all
# The floor (empty graph-launched kernel) and the D2D copy vs our reduction kernel at 256 MiB.
run "$bundle/bin/weft-device-bench"
# The issue's all-reduce: bf16 sum 16 KiB .. 256 MiB, 2 ranks sharing the GPU, results checked:
# as threads of one process (-t 2) here, as 2 processes below (CUDA IPC under MPS), eager (events
# around 100 calls) and captured (-G 10: the 100 calls of a row in one graph per rank, launched 10 times).
wb=("$bundle/bin/weft-bench" all_reduce --device -d bfloat16 -o sum -b 16K -e 256M -f 4 -n 100 -w 5 -c 1 -T 200)
run "${wb[@]}" --ranks 2 -t 2
run "${wb[@]}" --ranks 2 -t 2 -G 10
# Part 2: ranks as processes, which share the GPU only under MPS.
echo "== MPS"
# Ranks as processes share the GPU through MPS (without it they time-slice: correct, never used for
# latency figures). Started here with private pipe/log folders, stopped at the end.
mps_started=0
if command -v nvidia-cuda-mps-control >/dev/null 2>&1; then
  export CUDA_MPS_PIPE_DIRECTORY=${CUDA_MPS_PIPE_DIRECTORY:-/tmp/weft-mps-pipe}
  export CUDA_MPS_LOG_DIRECTORY=${CUDA_MPS_LOG_DIRECTORY:-/tmp/weft-mps-log}
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d; then
    sleep 1
    if echo get_server_list | nvidia-cuda-mps-control >/dev/null 2>&1; then
      mps_started=1
      echo "MPS started (control daemon up; pipes in $CUDA_MPS_PIPE_DIRECTORY)"
    else
      echo "MPS control daemon did not answer: NOT started; process ranks time-slice"
    fi
  else
    echo "nvidia-cuda-mps-control -d failed: MPS NOT started; process ranks time-slice"
  fi
else
  echo "nvidia-cuda-mps-control absent: MPS NOT started; process ranks time-slice"
fi
stop_mps() { [ $mps_started -eq 1 ] && echo quit | nvidia-cuda-mps-control && echo "MPS stopped"; }
trap stop_mps EXIT

run "$bundle/bin/weft-device-coll-test" procs 2
# A process rank killed while a kernel waits on it: the kernel ends at its deadline.
run "$bundle/bin/weft-device-coll-test" procs 2 kill
run "${wb[@]}" --ranks 2
run "${wb[@]}" --ranks 2 -G 10
echo "== device-check: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
exit $status
