#!/usr/bin/env bash
# The checks issue 15 asks of a machine with an NVIDIA GPU (none of them can run without one):
# builds the CUDA backend, runs the `gpu` conformance tests, compares a greedy continuation on
# --device cuda with the CPU's, benchmarks decode/prefill on both, and runs the long-context
# session in every memory mode on the device (DeviceSessionGpu, eval passkey). Prints everything;
# exits non-zero on the first failure.
#
#   scripts/gpu_check.sh [BUILD_DIR]      # default build-gpu/
#   GPU_CHECK_BIN=DIR scripts/gpu_check.sh  # programs built elsewhere (below)
#
# Needs the packages of scripts/setup.sh, the CUDA Toolkit (nvcc in /usr/local/cuda/bin or on
# PATH) and the default model (models/SmolLM2-135M-Instruct.Q4_1.gguf). On a GPU machine that
# cannot build muninn, bundle the programs on one that can (scripts/gpu_bundle.sh OUT.tar.xz
# build/tools/muninn build/tests/muninn_{core,model,retriever,tools}_test
# build/bench/muninn_core_bench), unpack it there, put its lib/ and CUDA's libraries on
# LD_LIBRARY_PATH and run this from a checkout with GPU_CHECK_BIN=<the bundle's bin/>.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=$(realpath -m "${1:-$root/build-gpu}")
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
say() { printf '[gpu_check] %s\n' "$*" >&2; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || {
  say "nvidia-smi failed: no GPU or driver here"; exit 2; }
export MUNINN_HOME="$root"  # the tests' data and the commands' configs/, models/, data/
if [ -n "${GPU_CHECK_BIN:-}" ]; then
  bin() { echo "$GPU_CHECK_BIN/$1"; }
else
  if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMUNINN_CUDA=ON \
      -DCMAKE_CUDA_COMPILER="$nvcc" -DMUNINN_BUILD_BENCHMARKS=ON >/dev/null
  fi
  cmake --build "$build_dir" -j "$(nproc)" --target muninn muninn_core_test muninn_tools_test \
    muninn_retriever_test muninn_model_test muninn_core_bench
  bin() {
    case $1 in
      muninn) echo "$build_dir/tools/muninn" ;;
      muninn_core_bench) echo "$(bin muninn_core_bench)" ;;
      *) echo "$build_dir/tests/$1" ;;
    esac
  }
fi

say "conformance suite on the GPU (BackendConformanceGpu.*, CudaBackendGpu.*, TrainOpsGpu.*)"
"$(bin muninn_core_test)" --gtest_filter='*Gpu*:CudaBackend.*:CudaBlockDecode.*'
"$(bin muninn_tools_test)" --gtest_filter='DeviceBackend.*'

say "the trainer on the GPU: the tiny model's loss and gradients, cpu vs cuda"
"$(bin muninn_model_test)" --gtest_filter='*Gpu*'

say "long-context session on the GPU: every memory mode on the tiny model, cpu vs cuda"
"$(bin muninn_retriever_test)" --gtest_filter='DeviceSession*'

muninn=$(bin muninn)
prompt="The capital of France is"
say "greedy continuation, cpu vs cuda"
cpu_out=$("$muninn" generate --device cpu -p "$prompt" -n 32 --temp 0 2>/dev/null)
gpu_out=$("$muninn" generate --device cuda -p "$prompt" -n 32 --temp 0 2>/dev/null)
printf 'cpu:  %s\ncuda: %s\n' "$cpu_out" "$gpu_out"
[ "$cpu_out" = "$gpu_out" ] || say "the continuations differ (expected only after a near-tie; compare logits)"
plain_out=$(MUNINN_CUDA_FUSED_DECODE=0 "$muninn" generate --device cuda -p "$prompt" -n 32 --temp 0 2>/dev/null)
printf 'cuda, plain ops: %s\n' "$plain_out"
[ "$plain_out" = "$gpu_out" ] || say "fused and plain decode ops differ on cuda (expected only after a near-tie)"
"$muninn" logits --device cpu -p "$prompt" --top 5
"$muninn" logits --device cuda -p "$prompt" --top 5

say "partial offload: the top 15 of 30 layers on the GPU (--gpu-layers 15), then 1"
"$muninn" logits --device cuda --gpu-layers 15 -p "$prompt" --top 5
"$muninn" generate --device cuda --gpu-layers 1 -p "$prompt" -n 32 --temp 0 2>/dev/null
"$muninn" bench --device cuda --gpu-layers 15 -p 512 -n 128 -r 3

say "kernels alone: mat×vec, prefill matmul (decoded-weight cache), attention SIMT (tc 0) vs tensor cores (tc 1)"
"$(bin muninn_core_bench)" --benchmark_filter='BM_Cuda' --benchmark_min_time=0.2

say "bench (pp512 / tg128), cpu then cuda"
"$muninn" bench --device cpu -p 512 -n 128 -r 3
"$muninn" bench --device cuda -p 512 -n 128 -r 3
say "bench on cuda with the plain ops instead of the fused decode ops (A/B)"
MUNINN_CUDA_FUSED_DECODE=0 "$muninn" bench --device cuda -p 512 -n 128 -r 3

say "decode with memory at 80k depth vs depth 0 (the default configuration), on cuda"
"$muninn" bench --device cuda --memory-depth 81920 -n 128 -r 3

say "passkey retrieval through the session (memlong, reread), cpu then cuda"
"$muninn" eval passkey --lengths 4096 --trials 2 --modes reread,memlong --device cpu
"$muninn" eval passkey --lengths 4096 --trials 2 --modes reread,memlong --device cuda

say "fine-tuning, cpu then cuda: 4 steps of LoRA on Genesis (the losses should agree to ~1e-4)"
for dev in cpu cuda; do
  "$muninn" train --device "$dev" -d "$root/data/genesis.txt" -o "/tmp/gpu_check_train_$dev" \
    --block 512 --steps 4 --seed 1 2>&1 | grep -E "step [0-9]+|tok/s" | tail -5
done
