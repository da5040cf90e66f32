#!/usr/bin/env bash
# weft-bench's --device bookkeeping without a GPU, through weft-bench-hostsim (the device interface
# of bench/weft_bench_cuda.cc played by host memory; see there): every collective and type with
# --device, spawned processes and thread ranks, checked against the host reference (-c 1) through
# the put / complement / copy-back path; the GPU choice (local rank modulo 2 pretend GPUs) in the
# rank lines; -z 1 (events per iteration); and the thread ranks' barrier sequence around graph
# capture, instantiation and destruction (-G with -c 0: a pretend graph launch does nothing, so its
# replays cannot be checked here). Not CUDA, not the library's device path: those need a GPU
# (tests/bench/check_device.sh, label gpu).
# usage: check_device_hostsim.sh <weft-bench-hostsim>
set -uo pipefail
sim=${1:?usage: check_device_hostsim.sh <weft-bench-hostsim>}
here=$(cd "$(dirname "$0")" && pwd)
status=0
fail() { echo "check_device_hostsim: FAIL: $*" >&2; status=1; }

table() {
  echo "== weft-bench-hostsim $*"
  "$here/check_table.sh" "$sim" "$@" --device -T 240 > "$tmp" || { cat "$tmp"; fail "$*"; return; }
  tail -n 1 "$tmp"
}
tmp=$(mktemp "${TMPDIR:-/tmp}/weft-bench-sim.XXXXXX")
trap 'rm -f "$tmp"' EXIT

table all_reduce --ranks 3 -d all -o all -b 8 -e 48K -f 6 -n 2
grep -q '^#  Rank  1 Group  0 Pid .* device 1 \[sim\]' "$tmp" || fail "rank 1 is not on pretend GPU 1"
grep -q '^#  Rank  2 Group  0 Pid .* device 0 \[sim\]' "$tmp" || fail "rank 2 is not on pretend GPU 0 (2 % 2)"
grep -q '^# Device buffers (--device)' "$tmp" || fail "no device header line"
table all_reduce --ranks 4 -t 2 -d bfloat16 -o sum -b 0 -e 3M -f 1 -i 1M -n 2 -m 2 -z 1
table reduce_scatter --ranks 3 -t 3 -d all -o all -b 8 -e 48K -f 6 -n 2
for coll in all_gather broadcast reduce alltoall sendrecv; do
  table $coll --ranks 4 -t 2 -d all -r all -b 8 -e 48K -f 6 -n 2
done

# Graph choreography: captures, instantiation, launches and destruction for 2 processes of 2
# thread ranks and 1 process of 3, in and out of place, every row: no deadlock, no error.
for ranks in "--ranks 4 -t 2" "--ranks 3 -t 3"; do
  # shellcheck disable=SC2086
  out=$(timeout 240 "$sim" all_reduce --device $ranks -G 3 -c 0 -b 8 -e 1M -f 8 -n 4 -w 1 -T 200 2>&1)
  rc=$?
  if [ $rc -ne 0 ] || ! grep -q '^# Out of bounds values : 0 OK$' <<< "$out" ||
     ! grep -q 'validation: 0 graph: 3 ' <<< "$out" || [ "$(grep -cv "^#" <<< "$out")" -ne 6 ]; then
    echo "$out"
    fail "-G 3 $ranks: exit $rc"
  else
    echo "ok: -G 3 $ranks: $(grep -cv '^#' <<< "$out") rows"
  fi
done
[ $status -eq 0 ] && echo "check_device_hostsim: PASS"
exit $status
