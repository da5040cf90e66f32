#!/usr/bin/env bash
# Run weft-bench and check its nccl-tests table: exit status 0, at least one data row, every row
# complete with #wrong = 0 for out-of-place and in-place, and the footer says OK.
# usage: check_table.sh <weft-bench> <args...>
set -uo pipefail
bench=${1:?usage: check_table.sh <weft-bench> <args...>}
shift
out=$(mktemp "${TMPDIR:-/tmp}/weft-bench-check.XXXXXX")
trap 'rm -f "$out"' EXIT

"$bench" "$@" > "$out"
rc=$?
cat "$out"
fail() { echo "check_table: FAIL: $*" >&2; exit 1; }
[ $rc -eq 0 ] || fail "weft-bench exited with status $rc"

grep -q '^#       size         count      type   redop    root     time   algbw   busbw  #wrong' "$out" ||
  fail "no table header"
# Data rows: size count type redop root | time algbw busbw #wrong | time algbw busbw #wrong
awk '
  /^#/ || NF == 0 { next }
  { rows++
    if (NF != 13) { printf "malformed row: %s\n", $0; bad++; next }
    if ($9 != "0" || $13 != "0") { printf "wrong elements: %s\n", $0; bad++ } }
  END { if (rows == 0) { print "no data rows"; exit 1 } exit bad ? 1 : 0 }
' "$out" >&2 || fail "table check failed"
grep -q '^# Out of bounds values : 0 OK$' "$out" || fail "footer does not say 0 OK"
grep -Eq '^# weft staging bytes held: [0-9]+$' "$out" || fail "no staging bytes line"
grep -q '^# Avg bus bandwidth' "$out" || fail "no average bus bandwidth line"
echo "check_table: PASS ($(grep -cv '^#' "$out") rows)"
