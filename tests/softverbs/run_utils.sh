#!/bin/sh
# Runs Debian's unmodified verbs utilities (package ibverbs-utils) over softverbs.
#   run_utils.sh <softverbs lib dir> <fixtures dir> <case>
# case: devices | devinfo | devinfo-roce | pingpong-ib | pingpong-ib-grh | pingpong-roce |
#       pingpong-events | pingpong-2dev | pingpong-valgrind
set -u
LIBDIR=$1
FIXTURES=$2
CASE=$3

fail() { echo "FAIL ($CASE): $*" >&2; exit 1; }

for tool in ibv_devices ibv_devinfo ibv_rc_pingpong; do
  command -v $tool >/dev/null 2>&1 ||
    fail "$tool not found: install the Debian package ibverbs-utils (apt-get install ibverbs-utils libibverbs-dev)"
done
[ -f "$LIBDIR/libibverbs.so.1" ] || fail "no $LIBDIR/libibverbs.so.1 (build the softverbs target)"

export LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
unset SOFTVERBS_SYSFS_ROOT SOFTVERBS_DELAY_US
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# The library the tools really load must be ours.
check_loaded() {
  ldd "$(command -v ibv_devices)" | grep -q "$LIBDIR/libibverbs.so.1" ||
    fail "ibv_devices does not resolve libibverbs.so.1 to $LIBDIR"
}

# pingpong <server args> -- <client args>; both sides must succeed.
pingpong() {
  wrap=""
  limit=20
  if [ "${VALGRIND:-}" = 1 ]; then
    command -v valgrind >/dev/null 2>&1 || fail "valgrind not found: install the Debian package valgrind"
    wrap="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite"
    limit=50
  fi
  sargs=$1
  cargs=$2
  attempt=0
  while [ $attempt -lt 5 ]; do
    attempt=$((attempt + 1))
    port=$(( 20000 + ($$ * 7 + attempt * 131 + $(date +%N | sed 's/^0*//;s/^$/0/') % 997) % 30000 ))
    timeout $limit $wrap ibv_rc_pingpong -p $port $sargs >"$TMP/server" 2>&1 &
    spid=$!
    # The client retries until the server listens (it fails fast with "Couldn't connect").
    ok=0
    tries=0
    while [ $tries -lt 100 ]; do
      tries=$((tries + 1))
      kill -0 $spid 2>/dev/null || break
      if timeout $limit $wrap ibv_rc_pingpong -p $port $cargs localhost >"$TMP/client" 2>&1; then
        ok=1
        break
      fi
      grep -q "Couldn't connect" "$TMP/client" || break
      sleep 0.1
    done
    wait $spid
    src=$?
    if [ $ok = 1 ] && [ $src = 0 ]; then
      cat "$TMP/client"
      grep -q "usec/iter" "$TMP/client" || fail "client printed no timing"
      grep -q "usec/iter" "$TMP/server" || fail "server printed no timing"
      return 0
    fi
    if grep -q "Couldn't listen" "$TMP/server"; then continue; fi  # port taken: another one
    echo "--- server (exit $src)"; cat "$TMP/server"
    echo "--- client"; cat "$TMP/client"
    fail "ibv_rc_pingpong failed"
  done
  fail "no free TCP port for ibv_rc_pingpong"
}

case "$CASE" in
  devices)
    check_loaded
    out=$(timeout 20 ibv_devices) || fail "ibv_devices exited $?"
    echo "$out"
    echo "$out" | grep -q "softverbs0" || fail "default device softverbs0 not listed"
    out=$(SOFTVERBS_SYSFS_ROOT=$FIXTURES/ib2 timeout 20 ibv_devices) || fail "ibv_devices (ib2) exited $?"
    echo "$out"
    echo "$out" | grep -q "mlx5_0.*0002c90300abcd00" || fail "fixture device mlx5_0 missing"
    echo "$out" | grep -q "mlx5_1.*0002c90300abcd01" || fail "fixture device mlx5_1 missing"
    ;;
  devinfo)
    out=$(timeout 20 ibv_devinfo -v) || fail "ibv_devinfo -v exited $?"
    echo "$out"
    echo "$out" | grep -q "hca_id:.*softverbs0" || fail "no hca_id"
    echo "$out" | grep -q "PORT_ACTIVE" || fail "port not active"
    echo "$out" | grep -q "port_lid:[[:space:]]*1" || fail "default port has no LID"
    echo "$out" | grep -q "link_layer:[[:space:]]*InfiniBand" || fail "default port is not InfiniBand"
    echo "$out" | grep -q "GID\[  0\]:[[:space:]]*fe80" || fail "GID 0 missing"
    out=$(timeout 20 ibv_devinfo -l) || fail "ibv_devinfo -l exited $?"
    echo "$out" | grep -q "1 HCA found" || fail "ibv_devinfo -l: $out"
    ;;
  devinfo-roce)
    out=$(SOFTVERBS_SYSFS_ROOT=$FIXTURES/roce timeout 20 ibv_devinfo -v) || fail "ibv_devinfo exited $?"
    echo "$out"
    echo "$out" | grep -q "hca_id:.*svroce0" || fail "no hca_id"
    echo "$out" | grep -q "link_layer:[[:space:]]*Ethernet" || fail "not Ethernet"
    echo "$out" | grep -q "::ffff:10.0.0.1, RoCE v2" || fail "RoCE v2 IPv4 GID missing"
    echo "$out" | grep -q "fw_ver:[[:space:]]*22.35.1012" || fail "fw_ver not from the fixture"
    ;;
  pingpong-ib)
    pingpong "-n 300" "-n 300"
    pingpong "-n 20 -s 4194304" "-n 20 -s 4194304"
    ;;
  pingpong-ib-grh)
    pingpong "-n 200 -g 0" "-n 200 -g 0"
    ;;
  pingpong-roce)
    export SOFTVERBS_SYSFS_ROOT=$FIXTURES/roce
    pingpong "-n 200 -g 3" "-n 200 -g 3"
    pingpong "-n 100 -g 1 -m 1024 -s 65536" "-n 100 -g 1 -m 1024 -s 65536"
    ;;
  pingpong-events)
    export SOFTVERBS_DELAY_US=200
    pingpong "-n 200 -e" "-n 200 -e"
    ;;
  pingpong-2dev)
    export SOFTVERBS_SYSFS_ROOT=$FIXTURES/ib2
    pingpong "-n 200 -d mlx5_0" "-n 200 -d mlx5_1"
    ;;
  pingpong-valgrind)
    VALGRIND=1
    pingpong "-n 30 -s 4096" "-n 30 -s 4096"
    ;;
  *)
    fail "unknown case"
    ;;
esac
echo "PASS ($CASE)"
