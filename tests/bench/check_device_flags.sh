#!/usr/bin/env bash
# weft-bench --device and -G/--cudagraph, what runs without a GPU: flag errors (exit 2, before any
# rank starts), a weft-bench built without CUDA refusing --device (exit 2, "built without CUDA")
# while its host mode still works, and a weft-bench built with CUDA on a machine without a GPU or
# driver failing with one clear sentence and exit 3 (spawned processes, -t threads, and under a
# launcher) -- never a crash. On a machine with a GPU, that run must instead pass its check.
# usage: check_device_flags.sh <weft-bench> [<weft-bench built without CUDA>]
set -uo pipefail
bench=${1:?usage: check_device_flags.sh <weft-bench> [<weft-bench-nocuda>]}
nocuda=${2:-}
status=0
fail() { echo "FAIL: $*" >&2; status=1; }

# expect <exit status> <message substring> <binary> <args...>
expect() {
  local want_rc=$1 want=$2 bin=$3 err rc
  shift 3
  err=$(timeout 120 "$bin" "$@" 2>&1 >/dev/null)
  rc=$?
  if [ $rc -ne "$want_rc" ]; then
    fail "$(basename "$bin") $* exited $rc (want $want_rc): $err"
  elif ! grep -qF -- "$want" <<< "$err"; then
    fail "$(basename "$bin") $*: message lacks '$want': $err"
  elif grep -qiE 'segmentation|core dumped|terminate called|abort' <<< "$err"; then
    fail "$(basename "$bin") $*: crashed: $err"
  else
    echo "ok: $(basename "$bin") $* -> $rc: $(head -n 1 <<< "$err")"
  fi
}

expect 2 "-G/--cudagraph captures calls on a CUDA stream: it needs --device" "$bench" all_reduce -G 2
expect 2 "-G/--cudagraph: expected an integer" "$bench" all_reduce --device -G x
expect 2 "-G/--cudagraph: expected an integer" "$bench" all_reduce --device --cudagraph -1
expect 2 "unknown option '--device=1'" "$bench" all_reduce --device=1
expect 2 "--compare mpi times host buffers; it cannot be combined with --device" "$bench" all_reduce --device --compare mpi
expect 2 "--compare gloo times host buffers" "$bench" all_reduce --device --compare gloo
"$bench" --help | grep -q -- "--device" || fail "--help does not document --device"
"$bench" --help | grep -q -- "-G, --cudagraph" || fail "--help does not document -G/--cudagraph"

# The --device binary links the CUDA runtime statically: it needs neither libcudart nor libcuda.
if readelf -d "$bench" | grep -E 'NEEDED.*lib(cudart|cuda)\.so'; then
  fail "weft-bench needs a CUDA library at load time"
fi

# Built without CUDA: --device is refused (before any rank starts), host buffers work as always.
if [ -n "$nocuda" ]; then
  for args in "" "--ranks 2 -t 2" "-G 3"; do
    # shellcheck disable=SC2086
    expect 2 "this weft-bench was built without CUDA" "$nocuda" all_reduce --device $args
  done
  err=$(WEFT_RANK=0 WEFT_NRANKS=1 WEFT_COMM_ID=127.0.0.1:1 timeout 60 "$nocuda" all_reduce --device 2>&1 >/dev/null)
  rc=$?
  if [ $rc -ne 2 ] || ! grep -qF "built without CUDA" <<< "$err"; then
    fail "built without CUDA, under a launcher: exit $rc: $err"
  else
    echo "ok: built without CUDA, under a launcher -> 2"
  fi
  out=$(timeout 120 "$nocuda" all_reduce -b 8 -e 64K -f 8 -n 2 -c 1 -T 100 2>&1)
  rc=$?
  if [ $rc -ne 0 ] || ! grep -q '^# Out of bounds values : 0 OK$' <<< "$out"; then
    fail "built without CUDA, host buffers: exit $rc: $out"
  else
    echo "ok: built without CUDA, host buffers: table OK"
  fi
  grep -q 'device -1 \[cpu\] host memory (no GPU)' <<< "$out" || fail "host rank lines changed: $out"
fi

# Built with CUDA (the binary says so by not refusing): without a GPU or driver, exit 3 and one
# sentence naming the CUDA call; with a GPU the run passes its check.
err=$("$bench" all_reduce --device -b 8 -e 8 -n 1 -c 1 2>&1 >/dev/null)
if grep -qF "built without CUDA" <<< "$err"; then
  echo "ok: $bench is built without CUDA (no GPU path to check)"
  exit $status
fi
gpu_or_not() {  # gpu_or_not <what> [VAR=value...] <weft-bench> <args...>
  local what=$1 err rc
  shift
  err=$(timeout 240 env "$@" 2>&1)
  rc=$?
  if [ $rc -eq 3 ]; then
    if ! grep -qE "weft-bench: --device: no usable CUDA device.*: cuda[A-Za-z]+: " <<< "$err"; then
      fail "$what: exit 3 without the sentence naming the CUDA call: $err"
    elif [ "$(grep -c 'no usable CUDA device' <<< "$err")" -ne 1 ]; then
      fail "$what: the sentence is not printed exactly once: $err"
    else
      echo "ok: $what -> 3: $(grep 'no usable CUDA device' <<< "$err")"
    fi
  elif [ $rc -eq 0 ] && grep -q '^# Out of bounds values : 0 OK$' <<< "$err"; then
    echo "ok: $what -> 0 (a GPU is here: results checked)"
  elif [ $rc -eq 2 ] && grep -q "MPS is not running" <<< "$err"; then
    echo "ok: $what -> 2 (a GPU is here without MPS: the library's refusal is printed)"
  else
    fail "$what: exit $rc: $err"
  fi
}
gpu_or_not "--device, 2 spawned processes" "$bench" all_reduce --device -b 8 -e 1K -f 8 -n 1 -c 1 -T 200
gpu_or_not "--device, 2 thread ranks" "$bench" all_reduce --device --ranks 2 -t 2 -b 8 -e 1K -f 8 -n 1 -c 1 -T 200
gpu_or_not "--device -G 2, 2 thread ranks" "$bench" all_reduce --device --ranks 2 -t 2 -G 2 -b 8 -e 1K -f 8 -n 1 -c 1 -T 200
gpu_or_not "--device under a launcher (1 rank)" WEFT_RANK=0 WEFT_NRANKS=1 WEFT_COMM_ID=127.0.0.1:29533 \
  "$bench" all_reduce --device -b 8 -e 1K -f 8 -n 1 -c 1 -T 200
exit $status
