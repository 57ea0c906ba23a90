// Private to the CPU backend: what every CPU kernel receives.
#pragma once

#include "muninn/core/cpu_features.h"
#include "muninn/core/thread_pool.h"

namespace muninn::cpu {

struct CpuContext {
  ThreadPool* pool = nullptr;  // may be null: run on the calling thread
  CpuIsa isa = CpuIsa::kScalar;
  bool exact_matmul = false;   // CpuBackendOptions::exact_matmul
};

}  // namespace muninn::cpu
