#!/usr/bin/env bash
# weft-bench under a real launcher: `mpirun -np 2 weft-bench all_reduce ...` must run ONE 2-rank job
# through weftCommInitFromEnv (no spawned ranks; with no WEFT_COMM_ID, weft-bench picks a
# 127.0.0.1 rendezvous from Open MPI's job id), print one table with every #wrong 0.
# Skipped (exit 77) when mpirun is not installed.
# usage: check_mpirun.sh <weft-bench>
set -uo pipefail
bench=${1:?usage: check_mpirun.sh <weft-bench>}
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v mpirun > /dev/null 2>&1; then
  echo "SKIP: mpirun is not installed (Debian: apt-get install openmpi-bin libopenmpi-dev)"
  exit 77
fi
out=$(mktemp "${TMPDIR:-/tmp}/weft-bench-mpirun.XXXXXX")
trap 'rm -f "$out"' EXIT
unset WEFT_COMM_ID MASTER_ADDR MASTER_PORT WEFT_RANK WEFT_NRANKS
# check_table.sh runs its first argument with the rest: here mpirun with weft-bench's command line.
"$here/check_table.sh" mpirun --allow-run-as-root --oversubscribe -np 2 --mca btl tcp,self \
  "$bench" all_reduce -b 8 -e 1M -f 8 -c 1 -T 200 | tee "$out"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "check_mpirun: FAIL: the table check failed" >&2; exit 1; }
tables=$(grep -c '^# Collective test concluded' "$out")
[ "$tables" -eq 1 ] || { echo "check_mpirun: FAIL: $tables tables (want 1: one 2-rank job, no spawned ranks)" >&2; exit 1; }
grep -q '^#  Rank  1 Group' "$out" || { echo "check_mpirun: FAIL: no rank 1 in the table header" >&2; exit 1; }
grep -q '^#  Rank  2 Group' "$out" && { echo "check_mpirun: FAIL: more than 2 ranks" >&2; exit 1; }
echo "check_mpirun: PASS"
