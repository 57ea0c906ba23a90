// Private to the CUDA backend: the factory of its TrainOps (muninn/core/train_ops.h), used by
// CudaBackend::CreateTrainOps.
#pragma once

#include <memory>

#include "cuda/cuda_context.h"
#include "muninn/core/train_ops.h"

namespace muninn::cuda {

// The training ops on ctx's device, stream, cuBLAS handle and allocator. `ctx` (the backend's) is
// borrowed and must outlive the result. Thread-compatible, like the backend.
std::unique_ptr<TrainOps> MakeCudaTrainOps(const CudaContext* ctx);

}  // namespace muninn::cuda
