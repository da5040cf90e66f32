#!/usr/bin/env bash
# weft-bench --device on a GPU (ctest label gpu): every collective the library takes on device
# buffers, every type (and every op where it reduces), odd sizes, zero, in place, checked against
# the host reference (-c 1), eager and in CUDA graphs (-G 2), with 2 ranks as threads sharing the
# GPU (-t 2), -m 2 (grouped calls), and with 2 ranks as processes (needs MPS: without it the library
# refuses device calls, which this test checks is said, and skips that part). all-to-all and
# send/recv on device buffers: a table with every result right, or the library's clean refusal
# ("does not take device buffers yet"), never a crash or hang.
# Exit 77 (skipped) where no GPU or driver is (weft-bench --device exits 3 there).
# usage: check_device.sh <weft-bench>
set -uo pipefail
bench=${1:?usage: check_device.sh <weft-bench>}
here=$(cd "$(dirname "$0")" && pwd)
status=0
fail() { echo "check_device: FAIL: $*" >&2; status=1; }

probe=$("$bench" all_reduce --device --ranks 2 -t 2 -b 8 -e 8 -n 1 -c 1 -T 60 2>&1)
rc=$?
if [ $rc -eq 3 ]; then
  echo "SKIP weft-bench --device: $(grep 'no usable CUDA device' <<< "$probe")"
  exit 77
fi
[ $rc -eq 0 ] || { echo "$probe"; echo "check_device: FAIL: the probe run exited $rc" >&2; exit 1; }

table() {  # table <args...>: check_table.sh on weft-bench --device
  echo "== weft-bench $*"
  "$here/check_table.sh" "$bench" "$@" --device -T 240 || fail "weft-bench $* --device"
}
common=(-d all -b 8 -e 192K -f 7 -n 3 -w 1 -c 1)  # 8 56 392 2744 19208 134456 bytes
for graph in "" "-G 2"; do
  # shellcheck disable=SC2086
  {
    table all_reduce --ranks 2 -t 2 -o all "${common[@]}" $graph
    table all_gather --ranks 2 -t 2 "${common[@]}" $graph
    table reduce_scatter --ranks 2 -t 2 -o all "${common[@]}" $graph
    table broadcast --ranks 2 -t 2 -r all "${common[@]}" $graph
    table reduce --ranks 2 -t 2 -o all -r all "${common[@]}" $graph
    table all_reduce --ranks 2 -t 2 -d bfloat16 -b 0 -e 4M -f 1 -i 1M -n 2 -m 2 $graph
  }
done
# Several staging rounds and the two-shot: 3 thread ranks, larger sizes.
table all_reduce --ranks 3 -t 3 -d float -o sum -b 1M -e 32M -f 4 -n 2 -c 1
table all_reduce --ranks 3 -t 3 -d bfloat16 -o sum -b 1M -e 32M -f 4 -n 2 -c 1 -G 2

# Ranks as processes: CUDA IPC; on one GPU only under MPS.
out=$("$bench" all_reduce --device --ranks 2 -d all -o sum -b 8 -e 1M -f 8 -n 2 -c 1 -T 240 2>&1)
rc=$?
if grep -q "MPS is not running" <<< "$out"; then
  [ $rc -eq 2 ] || fail "processes without MPS: exit $rc (want 2)"
  echo "SKIP processes: $(grep -m1 'MPS is not running' <<< "$out")"
else
  echo "$out"
  [ $rc -eq 0 ] && grep -q '^# Out of bounds values : 0 OK$' <<< "$out" || fail "processes: exit $rc"
  table all_reduce --ranks 2 -d bfloat16 -o all -b 8 -e 1M -f 8 -n 2 -c 1 -G 2
fi

# Not (yet) taken by the library on device buffers: a checked table, or its refusal said cleanly.
for coll in alltoall sendrecv; do
  out=$("$bench" $coll --device --ranks 2 -t 2 -d all -b 8 -e 64K -f 8 -n 2 -c 1 -T 120 2>&1)
  rc=$?
  if [ $rc -eq 0 ] && grep -q '^# Out of bounds values : 0 OK$' <<< "$out"; then
    echo "ok: $coll --device: every result right"
  elif [ $rc -eq 2 ] && grep -q "does not take device buffers" <<< "$out"; then
    echo "ok: $coll --device refused: $(grep -m1 'does not take device buffers' <<< "$out")"
  else
    echo "$out"
    fail "$coll --device: exit $rc"
  fi
done
[ $status -eq 0 ] && echo "check_device: PASS"
exit $status
