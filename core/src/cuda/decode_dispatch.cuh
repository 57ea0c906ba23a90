// Private to the CUDA backend: runtime dtype -> BlockDecoder<DT> dispatch for kernel templates.
#pragma once

#include <cuda_runtime.h>

#include "cuda/block_decode.h"

namespace muninn::cuda {

// Calls fn(BlockDecoder<DT>{}) for a dtype the kernels decode; cudaErrorInvalidValue otherwise
// (the backend validates dtypes first, so this is a second line of defence, not a code path).
template <class Fn>
cudaError_t DispatchDecoder(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kF32: fn(BlockDecoder<DType::kF32>{}); break;
    case DType::kF16: fn(BlockDecoder<DType::kF16>{}); break;
    case DType::kBF16: fn(BlockDecoder<DType::kBF16>{}); break;
    case DType::kQ4_0: fn(BlockDecoder<DType::kQ4_0>{}); break;
    case DType::kQ4_1: fn(BlockDecoder<DType::kQ4_1>{}); break;
    case DType::kQ5_0: fn(BlockDecoder<DType::kQ5_0>{}); break;
    case DType::kQ5_1: fn(BlockDecoder<DType::kQ5_1>{}); break;
    case DType::kQ8_0: fn(BlockDecoder<DType::kQ8_0>{}); break;
    case DType::kQ4_K: fn(BlockDecoder<DType::kQ4_K>{}); break;
    case DType::kQ5_K: fn(BlockDecoder<DType::kQ5_K>{}); break;
    case DType::kQ6_K: fn(BlockDecoder<DType::kQ6_K>{}); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace muninn::cuda
