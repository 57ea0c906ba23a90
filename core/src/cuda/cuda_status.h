// Private to the CUDA backend: CUDA runtime and cuBLAS results as Status.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

#include "muninn/core/status.h"

namespace muninn::cuda {

// OK for cudaSuccess; otherwise Unavailable when there is no usable device or driver,
// ResourceExhausted for out-of-memory, Internal for anything else; the message names `what`.
Status CudaStatus(cudaError_t err, const std::string& what);
Status CublasStatus(cublasStatus_t st, const std::string& what);

}  // namespace muninn::cuda

// Returns from the enclosing function when a CUDA runtime call fails.
#define MUNINN_CUDA_RETURN_IF_ERROR(expr)                                     \
  do {                                                                       \
    const cudaError_t muninn_cuda_err_ = (expr);                             \
    if (muninn_cuda_err_ != cudaSuccess) {                                   \
      return ::muninn::cuda::CudaStatus(muninn_cuda_err_, #expr);            \
    }                                                                        \
  } while (0)

#define MUNINN_CUBLAS_RETURN_IF_ERROR(expr)                                  \
  do {                                                                       \
    const cublasStatus_t muninn_cublas_st_ = (expr);                         \
    if (muninn_cublas_st_ != CUBLAS_STATUS_SUCCESS) {                        \
      return ::muninn::cuda::CublasStatus(muninn_cublas_st_, #expr);         \
    }                                                                        \
  } while (0)
