#!/usr/bin/env bash
# scripts/gpu_bundle.sh: bundles a program with its non-system libraries (never glibc, libstdc++
# or the CUDA libraries), and refuses a missing program with a clear message.
set -euo pipefail
script=$1 program=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
GPU_BUNDLE_XZ_LEVEL=0 "$script" "$dir/b.tar.xz" "$program" > "$dir/out.txt"
tar -tJf "$dir/b.tar.xz" > "$dir/list.txt"
grep -qx "bin/$(basename "$program")" "$dir/list.txt" || { echo "program missing"; cat "$dir/list.txt"; exit 1; }
if grep -E '^lib/(libc\.so|libstdc\+\+|libgcc_s|ld-linux|libcuda\.so|libcublas|libnccl)' "$dir/list.txt"; then
  echo "a system or CUDA library was bundled"; exit 1
fi
# Every non-system library the program links is in the bundle.
for lib in $(ldd "$program" | awk '/=> \// {print $3}'); do
  case $(basename "$lib") in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libgcc_s.so*|libstdc++.so*|ld-linux*|libcuda.so*|libcublas*|libcudart*|libnccl*) ;;
    *) grep -qx "lib/$(basename "$lib")" "$dir/list.txt" || { echo "missing $lib"; exit 1; } ;;
  esac
done
if GPU_BUNDLE_XZ_LEVEL=0 "$script" "$dir/x.tar.xz" "$dir/nonexistent" 2> "$dir/err.txt"; then
  echo "a missing program was accepted"; exit 1
fi
grep -q "is not an executable" "$dir/err.txt"
echo ok
