#!/usr/bin/env bash
# make-bundle.sh BUNDLE_DIR BINARY...: copy the binaries to BUNDLE_DIR/bin and the shared libraries
# they need that are not part of glibc or the CUDA driver (libweft, hwloc, udev) to BUNDLE_DIR/lib,
# stripped, as plain files (no symbolic links). The binaries find them through RPATH $ORIGIN/../lib.
set -euo pipefail
out=$1
shift
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
for b in "$@"; do
  cp "$b" "$out/bin/"
  ldd "$b" | awk '/=> \// {print $1, $3}' | while read -r name path; do
    case "$name" in
      libweft*|libhwloc*|libudev*) cp -L "$path" "$out/lib/$name" ;;
    esac
  done
done
strip --strip-unneeded "$out"/bin/* "$out"/lib/*
echo "bundle: $(du -sh "$out" | cut -f1) in $out"
ls -l "$out/bin" "$out/lib"
