#!/usr/bin/env bash
# Bundles built muninn programs with the shared libraries they need that a machine with only an
# NVIDIA driver and the CUDA runtime libraries may lack (OpenBLAS, OpenMPI, sentencepiece, ...),
# so that they run on a GPU machine that cannot build muninn itself. glibc, libstdc++/libgcc and
# the CUDA libraries (libcuda, cuBLAS, NCCL) are left out: the target's own must be used, and they
# must be at least as new as the build machine's (CUDA 13 for cuBLAS 13).
#
#   scripts/gpu_bundle.sh OUT.tar.xz [PROGRAM ...]   # default: build/tools/muninn
#
# GPU_BUNDLE_XZ_LEVEL (default 6) trades size for time: muninn + its libraries are 16 MB at 6 in
# ~40 s of one core, 22 MB at 1 in ~8 s.
#
# On the GPU machine:
#   mkdir -p /tmp/g && tar -xJf OUT.tar.xz -C /tmp/g
#   export LD_LIBRARY_PATH=/tmp/g/lib:<the directories of libcublas.so.13 and libnccl.so.2>
#   /tmp/g/bin/muninn bench --device cuda ...       # run from a muninn checkout (models/, data/)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUT.tar.xz [PROGRAM ...]" >&2; exit 2; }
out=$(realpath -m "$1"); shift
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
programs=("$@")
[ ${#programs[@]} -gt 0 ] || programs=("$root/build/tools/muninn")
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
for p in "${programs[@]}"; do
  [ -x "$p" ] || { echo "$0: $p is not an executable (build it first)" >&2; exit 1; }
  cp "$p" "$stage/bin/" && strip "$stage/bin/$(basename "$p")"
  ldd "$p" | awk '/=> \// {print $3}' | while read -r lib; do
    case $(basename "$lib") in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libgcc_s.so*|libstdc++.so*|ld-linux*) ;;
      libcuda.so*|libcublas*|libcudart*|libnccl*) ;;
      *) cp -L "$lib" "$stage/lib/" ;;
    esac
  done
done
strip --strip-unneeded "$stage"/lib/* 2>/dev/null || true
tar -C "$stage" -cf - bin lib | xz -T0 "-${GPU_BUNDLE_XZ_LEVEL:-6}" > "$out"
echo "$out: $(du -h "$out" | cut -f1) ($(ls "$stage/bin" | tr '\n' ' ')+ $(ls "$stage/lib" | wc -l) libraries)"
