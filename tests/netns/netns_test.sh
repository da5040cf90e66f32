#!/usr/bin/env bash
# Two hosts on one machine: two network namespaces joined by a veth pair, one rank in each, the
# example program all-reducing over TCP between them. The namespaces are made and removed here.
# Skips (exit 77, shown by ctest as skipped) when namespaces cannot be created (not root).
set -u
example="$1"
tag="weft$$"
ns1="${tag}a"; ns2="${tag}b"
cleanup() {
  ip netns del "$ns1" 2>/dev/null
  ip netns del "$ns2" 2>/dev/null
  rm -rf "$dir"
}
dir=$(mktemp -d)
trap cleanup EXIT
if ! ip netns add "$ns1" 2>/dev/null; then
  echo "SKIP: cannot create network namespaces here (needs root and iproute2)"
  exit 77
fi
ip netns add "$ns2" || exit 1
ip link add "v${tag}a" type veth peer name "v${tag}b" || exit 1
ip link set "v${tag}a" netns "$ns1" && ip link set "v${tag}b" netns "$ns2" || exit 1
ip -n "$ns1" addr add 10.231.0.1/24 dev "v${tag}a" && ip -n "$ns2" addr add 10.231.0.2/24 dev "v${tag}b" || exit 1
for ns in "$ns1" "$ns2"; do ip -n "$ns" link set lo up; done
ip -n "$ns1" link set "v${tag}a" up && ip -n "$ns2" link set "v${tag}b" up || exit 1

export WEFT_INIT_TIMEOUT_MS=20000
# No WEFT_SOCKET_IFNAME: each host must pick its veth (the only non-loopback interface) by itself.
ip netns exec "$ns1" timeout 60 "$example" 2 0 "$dir/id" > "$dir/out0" 2>&1 &
p0=$!
ip netns exec "$ns2" timeout 60 "$example" 2 1 "$dir/id" > "$dir/out1" 2>&1 &
p1=$!
wait $p0; r0=$?
wait $p1; r1=$?
cat "$dir/out0" "$dir/out1"
if [ $r0 -ne 0 ] || [ $r1 -ne 0 ]; then
  echo "FAIL: ranks in two network namespaces exited $r0 and $r1"
  exit 1
fi
echo "PASS: all-reduce across two network namespaces"
