#!/usr/bin/env bash
# weft-bench --compare gloo: the nccl-tests columns unchanged with #wrong 0, then Gloo's time (us)
# and weft/gloo per row: numbers for the types and ops Gloo reduces, "-" for the others (bfloat16,
# fp8, avg); Gloo's own results are checked by its helper (a corrupted result must fail the run);
# the helper's FileStore directory is gone afterwards. Skipped (exit 77) without the helper.
# usage: check_compare_gloo.sh <weft-bench>
set -uo pipefail
bench=${1:?usage: check_compare_gloo.sh <weft-bench>}
helper=$(dirname "$bench")/weft-gloo-bench
if [ ! -x "$helper" ]; then
  echo "SKIP: weft-gloo-bench is not built beside $bench (CMake found no Gloo; Debian: apt-get install libgloo-dev)"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-compare-gloo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export TMPDIR=$tmp  # the helpers' temporary files land here, so leftovers are seen
out=$tmp/out.txt
fail() { echo "check_compare_gloo: FAIL: $*" >&2; cat "$out" >&2; exit 1; }

run() {  # run <expected "-" in the gloo column: 0|1> <weft-bench args...>
  local dash=$1
  shift
  "$bench" "$@" --compare gloo -T 200 > "$out"
  local rc=$?
  [ $rc -eq 0 ] || fail "weft-bench $* --compare gloo exited with status $rc"
  grep -q '^# gloo library: Gloo .*TCP' "$out" || fail "no '# gloo library' line ($*)"
  grep -q '  #wrong       gloo  weft/gloo$' "$out" || fail "no gloo columns in the header ($*)"
  awk -v dash="$dash" '
    /^#/ || NF == 0 { next }
    { rows++
      if (NF != 15) { printf "malformed row: %s\n", $0; bad++; next }
      if ($9 != "0" || $13 != "0") { printf "wrong elements: %s\n", $0; bad++ }
      gloo_lacks = ($3 == "bfloat16" || $3 ~ /^f8/ || $4 == "avg")
      if ($14 == "-") { dashes++
        if ($15 != "-") { printf "ratio without time: %s\n", $0; bad++ }
        if (!gloo_lacks) { printf "- where Gloo has the type and op: %s\n", $0; bad++ } }
      else if ($14 !~ /^[0-9.e+]+$/ || $15 !~ /^[0-9.e+]+$/) { printf "bad gloo columns: %s\n", $0; bad++ }
      else if (gloo_lacks) { printf "a Gloo time for a type/op Gloo lacks: %s\n", $0; bad++ } }
    END { if (rows == 0) { print "no data rows"; exit 1 }
          if (dash == 0 && dashes) { print "unexpected - in the gloo column"; exit 1 }
          if (dash == 1 && !dashes) { print "expected - for types/ops Gloo lacks"; exit 1 }
          exit bad ? 1 : 0 }
  ' "$out" >&2 || fail "table check failed: weft-bench $*"
  grep -q '^# Out of bounds values : 0 OK$' "$out" || fail "footer does not say 0 OK ($*)"
  leftovers=$(find "$tmp" -mindepth 1 -not -name out.txt)
  [ -z "$leftovers" ] || fail "left behind: $leftovers"
  echo "ok: weft-bench $* --compare gloo ($(grep -cv '^#' "$out") rows)"
}

run 0 all_reduce -b 8 -e 64K -f 8 -n 3 -c 2
# Odd sizes (not multiples of the ranks or of 16 bytes).
run 0 all_reduce -d float -b 4 -e 1028 -i 204 -n 2
# Every type and op: numbers where Gloo reduces them, "-" for bfloat16, fp8 and avg.
run 1 all_reduce -d all -o all -b 8 -e 4K -f 8 -n 2
cat "$out"

# The check can fail: the helper flips one output byte of the last rank (a hidden test flag).
err=$("$helper" all_reduce --ranks 2 -n 1 -c 1 -T 100 --test-corrupt 1 float:sum:-1:1000 2>&1 >/dev/null)
rc=$?
if [ $rc -ne 1 ] || ! grep -q "gave 1 wrong elements" <<< "$err"; then
  echo "check_compare_gloo: FAIL: a corrupted Gloo result was not reported (status $rc): $err" >&2
  exit 1
fi
echo "ok: a corrupted Gloo result fails the helper: $err"
# A malformed spec is refused before any rank starts.
err=$("$helper" all_reduce --ranks 2 float:sum 2>&1 >/dev/null)
rc=$?
if [ $rc -ne 2 ] || ! grep -q "malformed spec" <<< "$err"; then
  echo "check_compare_gloo: FAIL: malformed spec accepted (status $rc): $err" >&2
  exit 1
fi
echo "check_compare_gloo: PASS"
