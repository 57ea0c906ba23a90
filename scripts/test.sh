#!/usr/bin/env bash
# Runs muninn's whole test suite on this machine, setting it up first (scripts/setup.sh: packages,
# models, text, build), so it works from a fresh clone of a fresh Debian 12 machine.
#
#   scripts/test.sh                 # fast + slow + gpu (gpu tests skip without a device)
#   scripts/test.sh -L fast         # extra arguments go to ctest (e.g. -L fast, -R Quant)
#   MUNINN_BUILD_DIR=build-asan MUNINN_SANITIZE=address,undefined scripts/test.sh -L fast
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir="${MUNINN_BUILD_DIR:-build}"
setup_args=(--build-dir "$root/$build_dir")
[ -n "${MUNINN_SANITIZE:-}" ] && setup_args+=(--sanitize "$MUNINN_SANITIZE")
[ -n "${CI:-}" ] && setup_args+=(--werror --lean-debug-info)
"$root/scripts/setup.sh" "${setup_args[@]}"
jobs=$(nproc 2>/dev/null || echo 2)
cd "$root/$build_dir"
exec ctest --output-on-failure --no-tests=error -j "$jobs" "$@"
