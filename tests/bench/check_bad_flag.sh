#!/usr/bin/env bash
# weft-bench must refuse bad command lines with a clear message and a non-zero exit, before it
# starts any rank.
# usage: check_bad_flag.sh <weft-bench>
set -uo pipefail
bench=${1:?usage: check_bad_flag.sh <weft-bench>}
status=0

expect() {  # expect <message substring> <args...>
  local want=$1 err rc
  shift
  err=$("$bench" "$@" 2>&1 >/dev/null)
  rc=$?
  if [ $rc -eq 0 ]; then
    echo "FAIL: weft-bench $* exited 0" >&2; status=1
  elif ! grep -qF -- "$want" <<< "$err"; then
    echo "FAIL: weft-bench $*: message lacks '$want': $err" >&2; status=1
  else
    echo "ok: weft-bench $* -> $rc: $(head -n 1 <<< "$err")"
  fi
}

expect "unknown option '--no-such-flag'" all_reduce --no-such-flag
expect "unknown option '-q'" all_reduce -q 1
expect "option '-b' needs a value" all_reduce -b
expect "-b/--minbytes: expected a byte count" all_reduce -b 12Q
expect "-d/--datatype: unknown type 'float9'" all_reduce -d float9
expect "-o/--op: unknown op 'mulsum'" all_reduce -o mulsum
expect "--ranks: expected an integer" all_reduce --ranks 0
expect "-e/--maxbytes is smaller" all_reduce -b 1M -e 1K
expect "unknown collective 'all_scatter'" all_scatter
expect "--compare: unknown peer 'nccl'" all_reduce --compare nccl
expect "-r/--root: expected an integer" broadcast -r x
expect "-r/--root 5 is not a rank" broadcast -r 5 --ranks 2
expect "missing the collective"

# --compare mpi without the helper beside the binary (a copy in an empty directory; the build
# tree's RPATH still finds libweft): a clear message, before any rank starts.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-bench-nohelper.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp "$bench" "$tmp/weft-bench"
real=$bench
bench=$tmp/weft-bench
expect "--compare mpi needs the MPI helper" all_reduce --compare mpi
expect "--compare gloo: this weft-bench was built without Gloo" all_reduce --compare gloo
bench=$real
expect "--compare gloo compares all_reduce only" all_gather --compare gloo
# Under a launcher, --compare mpi refuses (it starts mpirun itself).
err=$(WEFT_RANK=0 WEFT_NRANKS=1 "$bench" all_reduce --compare mpi 2>&1 >/dev/null)
if [ $? -eq 0 ] || ! grep -qF -- "--compare mpi starts mpirun itself" <<< "$err"; then
  echo "FAIL: --compare mpi under WEFT_RANK: $err" >&2; status=1
else
  echo "ok: --compare mpi under a launcher -> $(head -n 1 <<< "$err")"
fi
exit $status
