#!/usr/bin/env bash
# Builds muninn's libFuzzer targets (tests/fuzz/) with clang into build-fuzz/ and runs each one
# for a bounded time. Exits non-zero when a target fails to build or a fuzzer finds a crash, a
# leak, a timeout or an out-of-memory input; the input that did it is left in
# build-fuzz/fuzz-artifacts/ and the log in build-fuzz/fuzz-logs/. Idempotent: installs clang and
# libFuzzer (Debian clang + libclang-rt-dev) only when missing, reuses build-fuzz/.
#
#   scripts/fuzz.sh                      # every target, MUNINN_FUZZ_SECONDS (default 45) each
#   scripts/fuzz.sh muninn_gguf_fuzz     # only the named targets
#   MUNINN_FUZZ_SECONDS=300 scripts/fuzz.sh muninn_tokenizer_text_fuzz
#
# Corpora live in build-fuzz/fuzz-corpus/<target>/ (git-ignored, grown across runs on one
# machine); the tokenizer targets write their own seeds there first (MUNINN_FUZZ_SEED_DIR), and
# tests/fuzz/corpus/<target>/, when present, is used as extra read-only seeds.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir="${MUNINN_FUZZ_BUILD_DIR:-$root/build-fuzz}"
seconds="${MUNINN_FUZZ_SECONDS:-45}"
say() { printf '[fuzz] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# ---- clang + libFuzzer --------------------------------------------------------------------------
packages=(clang libclang-rt-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# ---- build ---------------------------------------------------------------------------------------
jobs=$(nproc 2>/dev/null || echo 2)
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  say "configuring $build_dir with clang"
  debug_flags=()   # CI: line tables only (backtraces keep file:line; faster build)
  [ -n "${CI:-}" ] && debug_flags=("-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -gline-tables-only -DNDEBUG")
  CC=clang CXX=clang++ cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMUNINN_CUDA=OFF -DMUNINN_BUILD_BENCHMARKS=OFF ${debug_flags[@]+"${debug_flags[@]}"} >/dev/null
fi
say "building the fuzz targets in $build_dir ($jobs jobs)"
cmake --build "$build_dir" -j "$jobs" --target muninn_fuzzers

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$build_dir"/tests/fuzz/muninn_*_fuzz; do targets+=("$(basename "$f")"); done
fi
[ ${#targets[@]} -gt 0 ] || { say "no fuzz targets were built"; exit 1; }

# ---- run -----------------------------------------------------------------------------------------
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
mkdir -p "$build_dir/fuzz-artifacts" "$build_dir/fuzz-logs"
failed=()
for t in "${targets[@]}"; do
  exe="$build_dir/tests/fuzz/$t"
  [ -x "$exe" ] || { say "$t: not built"; failed+=("$t"); continue; }
  corpus="$build_dir/fuzz-corpus/$t"
  mkdir -p "$corpus"
  dirs=("$corpus")
  [ -d "$root/tests/fuzz/corpus/$t" ] && dirs+=("$root/tests/fuzz/corpus/$t")
  log="$build_dir/fuzz-logs/$t.log"
  say "$t: ${seconds}s"
  start=$(date +%s)
  if MUNINN_FUZZ_SEED_DIR="$corpus" "$exe" "${dirs[@]}" -max_total_time="$seconds" \
      -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$build_dir/fuzz-artifacts/$t-" >"$log" 2>&1; then
    stats=$(grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$log" |
            sed 's/^stat:://' | tr -s ' ' | tr '\n' ' ')
    say "$t: clean after $(( $(date +%s) - start ))s ($stats; corpus $(ls "$corpus" | wc -l) inputs)"
  else
    say "$t: FAILED — log $log, input in $build_dir/fuzz-artifacts/"
    grep -E 'ERROR:|SUMMARY:|contract broken|Test unit written' "$log" | head -20 >&2 || true
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  say "failed: ${failed[*]}"
  exit 1
fi
say "all ${#targets[@]} fuzz targets ran clean"
