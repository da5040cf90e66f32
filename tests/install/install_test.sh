#!/usr/bin/env bash
# Install the build tree into a temporary prefix and use it the way a user would:
#   - build examples/ with pkg-config and with CMake (find_package(weft)), run allreduce on 2 ranks
#     and sendrecv_group (send/recv in a group, all-gather) on 3 ranks;
#   - libweft.so has a SONAME, needs no CUDA library, exports only weft* symbols;
#   - the installed weft.h compiles as strict C99;
#   - the installed weft-bench runs (finds libweft through its RPATH).
# usage: install_test.sh <build dir> <source dir>
set -euo pipefail

build=${1:?usage: install_test.sh <build dir> <source dir>}
src=${2:?usage: install_test.sh <build dir> <source dir>}
cc=${CC:-cc}
# Extra flags for the example builds (the sanitizer flags when libweft is built with them, so the
# sanitizer runtime comes first in the examples too).
xflags=${WEFT_TEST_EXTRA_CFLAGS:-}
export WEFT_SOCKET_IFNAME=${WEFT_SOCKET_IFNAME:-lo}

fail() { echo "install_test: FAIL: $*" >&2; exit 1; }
step() { echo "install_test: $*"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-install-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

[ -e "$build/CMakeCache.txt" ] || fail "$build is not a configured build tree"
step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" > "$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log" >&2; fail "cmake --install failed (is the build complete? run the full build first)"; }

libso=$(find "$prefix" -name 'libweft.so' | head -n 1)
[ -n "$libso" ] || fail "no libweft.so under $prefix"
libdir=$(dirname "$libso")
[ -f "$prefix/include/weft/weft.h" ] || fail "no include/weft/weft.h under $prefix"
[ -f "$libdir/pkgconfig/weft.pc" ] || fail "no pkgconfig/weft.pc next to libweft.so ($libdir)"

# --- the shared library itself ------------------------------------------------------------------
step "readelf -d: SONAME, no CUDA NEEDED"
dyn=$(readelf -d "$libso")
echo "$dyn" | grep -q '(SONAME)' || fail "libweft.so has no SONAME"
if echo "$dyn" | grep '(NEEDED)' | grep -Eiq 'libcuda|libcudart'; then
  fail "libweft.so links a CUDA library: $(echo "$dyn" | grep '(NEEDED)' | grep -Ei 'libcuda|libcudart')"
fi

step "nm -D --defined-only: only weft* symbols exported"
# Version nodes of the linker script (e.g. WEFT_0) show up as absolute symbols; they are not code.
bad=$(nm -D --defined-only "$libso" | awk '!($2 == "A" && $3 ~ /^WEFT_[0-9]+$/) && $3 !~ /^weft/ {print $3}')
[ -z "$bad" ] || fail "libweft.so exports non-weft symbols: $(echo $bad | head -c 2000)"
nm -D --defined-only "$libso" | grep -Eq ' weftAllReduce(@|$)' || fail "weftAllReduce is not exported"

# --- the public header as strict C99 ------------------------------------------------------------
step "weft.h compiles as C99 -pedantic -Wall -Wextra -Werror"
printf '#include <weft/weft.h>\nint main(void) { weftComm_t c = WEFT_COMM_NULL; (void)c; return 0; }\n' > "$tmp/c99.c"
"$cc" -std=c99 -pedantic -Wall -Wextra -Werror -I"$prefix/include" -c "$tmp/c99.c" -o "$tmp/c99.o" ||
  fail "weft.h is not clean C99"

# --- run an example on N local ranks ------------------------------------------------------------
runN() {  # runN <exe> <label> <nranks>
  local exe=$1 label=$2 n=$3 idf=$tmp/id.$2 r
  local pids=() rcs=()
  for ((r = 0; r < n; ++r)); do
    LD_LIBRARY_PATH=$libdir timeout 120 "$exe" "$n" "$r" "$idf" > "$tmp/$label.$r.out" 2>&1 &
    pids+=($!)
  done
  for ((r = 0; r < n; ++r)); do
    rcs[r]=0
    wait "${pids[r]}" || rcs[r]=$?
  done
  for ((r = 0; r < n; ++r)); do cat "$tmp/$label.$r.out"; done
  for ((r = 0; r < n; ++r)); do
    [ "${rcs[r]}" -eq 0 ] || fail "$label example failed (exit status per rank: ${rcs[*]})"
    grep -q 'OK$' "$tmp/$label.$r.out" || fail "$label example did not report OK on rank $r"
  done
}

# weft.pc carries the configure-time prefix; pkg-config is pointed at the temporary prefix.
export PKG_CONFIG_PATH=$libdir/pkgconfig
pkgconfig="pkg-config --define-variable=prefix=$prefix"
step "example with pkg-config: $pkgconfig --cflags --libs weft"
mkdir -p "$tmp/pc"
cp "$src/examples/allreduce.c" "$src/examples/sendrecv_group.c" "$src/examples/Makefile" "$tmp/pc/"
make -C "$tmp/pc" CC="$cc" CFLAGS="-O2 -Wall -Wextra -pedantic $xflags" PKG_CONFIG="$pkgconfig" \
  > "$tmp/pc/make.log" 2>&1 ||
  { cat "$tmp/pc/make.log" >&2; fail "examples/Makefile (pkg-config) build failed"; }
runN "$tmp/pc/allreduce" pkgconfig 2
runN "$tmp/pc/sendrecv_group" pkgconfig-group 3

step "example with CMake: find_package(weft), CMAKE_PREFIX_PATH=$prefix"
cmake -S "$src/examples" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" \
  -DCMAKE_C_FLAGS="$xflags" -DCMAKE_EXE_LINKER_FLAGS="$xflags" > "$tmp/cm.log" 2>&1 || { cat "$tmp/cm.log" >&2; fail "cmake configure of examples/ failed"; }
cmake --build "$tmp/cm" > "$tmp/cm-build.log" 2>&1 ||
  { cat "$tmp/cm-build.log" >&2; fail "cmake build of examples/ failed"; }
runN "$tmp/cm/allreduce" cmake 2
runN "$tmp/cm/sendrecv_group" cmake-group 3

# --- the installed benchmark finds the installed library without LD_LIBRARY_PATH ---------------
if [ -x "$prefix/bin/weft-bench" ]; then
  step "installed weft-bench runs (RPATH)"
  env -u LD_LIBRARY_PATH timeout 120 "$prefix/bin/weft-bench" all_reduce -b 8 -e 1K -f 8 -n 1 -T 100 \
    > "$tmp/bench.out" 2>&1 || { cat "$tmp/bench.out" >&2; fail "installed weft-bench failed"; }
fi

step "PASS"
