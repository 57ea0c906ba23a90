// The CPU backend: reference scalar kernels plus AVX2/FMA and AVX-512 paths chosen at run time.
#pragma once

#include <memory>

#include "muninn/core/backend.h"
#include "muninn/core/cpu_features.h"
#include "muninn/core/thread_pool.h"

namespace muninn {

struct CpuBackendOptions {
  // Worker pool (not owned; must outlive the backend). Null runs everything on the caller.
  ThreadPool* pool = nullptr;
  // Kernel family to use. Defaults to the best the CPU supports; asking for more than the CPU
  // supports is an error from Validate(). kScalar selects the portable reference kernels.
  CpuIsa isa = GetCpuFeatures().BestIsa();
  // When true, MatMul with a block-quantized weight never quantizes the activations: weight rows
  // are dequantized to f32 tile by tile (bounded per-thread buffers, never the whole matrix) and
  // multiplied in f32, so results differ from a float64 product of the dequantized weights only by
  // float32 rounding — what a framework running on dequantized weights computes, and what
  // identical greedy continuations against such goldens need. Slower than the default, which
  // quantizes activations to q8_0/q8_1/q8_K and uses integer dot products (logits within ~0.5).
  // f32/f16/bf16 weights already use f32 activations either way.
  bool exact_matmul = false;
  // Batched MatMul (prefill) with q4_0/q4_1/q5_0/q5_1/q8_0 weights uses the register-blocked
  // VNNI integer GEMM when the CPU has AVX-512 VNNI and `isa` is kAvx512; false keeps the
  // per-row dot kernels (for A/B measurements). Same activations and integer sums either way.
  bool int8_gemm = true;
  Status Validate() const;
};

StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(const CpuBackendOptions& options);

}  // namespace muninn
