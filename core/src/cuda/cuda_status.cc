#include "cuda/cuda_status.h"

namespace muninn::cuda {

Status CudaStatus(cudaError_t err, const std::string& what) {
  if (err == cudaSuccess) return Status::Ok();
  // Clear a sticky-free error so that the next call does not report it again.
  (void)cudaGetLastError();
  std::string msg = "CUDA error in " + what + ": " + cudaGetErrorName(err) + " (" +
                    cudaGetErrorString(err) + ")";
  switch (err) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorDevicesUnavailable:
    case cudaErrorInvalidDevice:
      return UnavailableError("no CUDA device: " + msg);
    case cudaErrorMemoryAllocation:
      return ResourceExhaustedError(msg + "; free device tensors or use a smaller context");
    default:
      return InternalError(msg);
  }
}

Status CublasStatus(cublasStatus_t st, const std::string& what) {
  if (st == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  std::string msg = "cuBLAS error in " + what + ": " + cublasGetStatusName(st) + " (" +
                    cublasGetStatusString(st) + ")";
  if (st == CUBLAS_STATUS_ALLOC_FAILED) return ResourceExhaustedError(msg);
  if (st == CUBLAS_STATUS_NOT_INITIALIZED) return UnavailableError(msg);
  return InternalError(msg);
}

}  // namespace muninn::cuda
