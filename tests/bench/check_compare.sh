#!/usr/bin/env bash
# weft-bench --compare mpi for every collective: the nccl-tests columns unchanged with #wrong 0,
# then two columns, Open MPI's time (us) and weft/mpi, numbers for float (and "-" where MPI has no
# such type or op). Skipped (exit 77) when mpirun or the weft-mpi-bench helper is missing.
# usage: check_compare.sh <weft-bench>
set -uo pipefail
bench=${1:?usage: check_compare.sh <weft-bench>}
if ! command -v mpirun > /dev/null 2>&1; then
  echo "SKIP: mpirun is not installed (Debian: apt-get install openmpi-bin libopenmpi-dev)"
  exit 77
fi
if [ ! -x "$(dirname "$bench")/weft-mpi-bench" ]; then
  echo "SKIP: weft-mpi-bench is not built beside $bench (CMake found no MPI C library)"
  exit 77
fi
out=$(mktemp "${TMPDIR:-/tmp}/weft-bench-compare.XXXXXX")
trap 'rm -f "$out"' EXIT
fail() { echo "check_compare: FAIL: $*" >&2; cat "$out" >&2; exit 1; }

run() {  # run <expected "-" in the mpi column: 0|1> <weft-bench args...>
  local dash=$1
  shift
  "$bench" "$@" --compare mpi -T 200 > "$out"
  local rc=$?
  [ $rc -eq 0 ] || fail "weft-bench $* --compare mpi exited with status $rc"
  grep -q '^# mpi library: ' "$out" || fail "no '# mpi library' line ($*)"
  grep -q '  #wrong        mpi  weft/mpi$' "$out" || fail "no mpi columns in the header ($*)"
  awk -v dash="$dash" '
    /^#/ || NF == 0 { next }
    { rows++
      if (NF != 15) { printf "malformed row: %s\n", $0; bad++; next }
      if ($9 != "0" || $13 != "0") { printf "wrong elements: %s\n", $0; bad++ }
      if ($14 == "-") { dashes++; if ($15 != "-") { printf "ratio without time: %s\n", $0; bad++ } }
      else if ($14 !~ /^[0-9.e+]+$/ || $15 !~ /^[0-9.e+]+$/) { printf "bad mpi columns: %s\n", $0; bad++ } }
    END { if (rows == 0) { print "no data rows"; exit 1 }
          if (dash == 0 && dashes) { print "unexpected - in the mpi column"; exit 1 }
          if (dash == 1 && !dashes) { print "expected - for types/ops MPI lacks"; exit 1 }
          exit bad ? 1 : 0 }
  ' "$out" >&2 || fail "table check failed: weft-bench $*"
  grep -q '^# Out of bounds values : 0 OK$' "$out" || fail "footer does not say 0 OK ($*)"
  echo "ok: weft-bench $* --compare mpi ($(grep -cv '^#' "$out") rows)"
}

for coll in all_reduce all_gather reduce_scatter broadcast reduce alltoall sendrecv; do
  run 0 "$coll" -b 8 -e 64K -f 8 -n 3 -r 1
done
# Half and avg: MPI has neither, their rows print "-"; 3 ranks, every root.
run 1 reduce --ranks 3 -d half -o avg -r all -b 8 -e 4K -f 8 -n 2
run 1 all_reduce -d float -o all -b 1K -e 1K -n 2
cat "$out"
echo "check_compare: PASS"
