#!/usr/bin/env bash
# Kill one rank of a running weft-bench: the launcher must report it, the other rank must not
# hang (it fails on the lost peer, or the launcher kills it after its grace period), and the exit
# status must be non-zero.
# usage: check_rank_killed.sh <weft-bench>
set -uo pipefail
bench=${1:?usage: check_rank_killed.sh <weft-bench>}
err=$(mktemp "${TMPDIR:-/tmp}/weft-bench-kill.XXXXXX")
trap 'rm -f "$err"' EXIT
fail() { echo "check_rank_killed: FAIL: $*" >&2; cat "$err" >&2; exit 1; }

"$bench" all_reduce -b 1M -e 1M -n 1000000 -c 0 -T 120 > /dev/null 2> "$err" &
launcher=$!

# Wait for both ranks, then a little longer so they are inside the timed loop.
workers=""
for _ in $(seq 1 300); do
  workers=$(pgrep -P "$launcher" | sort -n)
  [ "$(echo "$workers" | grep -c .)" -ge 2 ] && break
  sleep 0.1
done
[ "$(echo "$workers" | grep -c .)" -ge 2 ] || { kill "$launcher" 2>/dev/null; fail "ranks did not start"; }
sleep 2
victim=$(echo "$workers" | tail -n 1)
kill -9 "$victim"
start=$(date +%s)

wait "$launcher"
rc=$?
elapsed=$(( $(date +%s) - start ))
cat "$err"
[ $rc -ne 0 ] || fail "weft-bench exited 0 after a rank was killed"
grep -q "was killed by signal 9" "$err" || fail "the launcher did not report the killed rank"
[ "$elapsed" -le 30 ] || fail "took ${elapsed} s to finish after the kill"
echo "check_rank_killed: PASS (exit $rc after ${elapsed} s)"
