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
  Status Validate() const;
};

StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(const CpuBackendOptions& options);

}  // namespace muninn
