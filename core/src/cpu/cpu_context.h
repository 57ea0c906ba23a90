// Private to the CPU backend: what every CPU kernel receives.
#pragma once

#include "muninn/core/cpu_features.h"
#include "muninn/core/thread_pool.h"

namespace muninn::cpu {

struct CpuContext {
  ThreadPool* pool = nullptr;  // may be null: run on the calling thread
  CpuIsa isa = CpuIsa::kScalar;
  bool exact_matmul = false;   // CpuBackendOptions::exact_matmul
  // CpuBackendOptions::int8_gemm, and the CPU runs AVX-512 kernels with VNNI.
  bool vnni_gemm = false;
};

}  // namespace muninn::cpu
