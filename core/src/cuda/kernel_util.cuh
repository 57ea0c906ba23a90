// Private to the CUDA backend: device helpers shared by the .cu files (row addressing, warp and
// block reductions, grid sizing).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels.h"

namespace muninn::cuda {

inline constexpr int kWarp = 32;

// Byte offset of row r of a RowLayout.
__device__ __forceinline__ int64_t RowOffset(const RowLayout& l, int64_t r) {
  int64_t off = 0;
  for (int k = l.n_outer - 1; k >= 0; --k) {
    const int64_t d = l.dims[k];
    off += (r % d) * l.strides[k];
    r /= d;
  }
  return off;
}

// SiLU as the CPU reference computes it (core/src/cpu/eltwise_scalar.cc), with CUDA's expf.
__device__ __forceinline__ float SiluF(float x) { return x / (1.0f + expf(-x)); }

// Sum over the warp (float, or double for the training kernels' per-row sums, as the CPU
// reference's); every lane gets the result.
template <typename T>
__device__ __forceinline__ T WarpSum(T v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum (or max) over the block; every thread gets the result. blockDim.x is a multiple of 32 and
// at most 1024; `scratch` holds 32 values of shared memory.
template <typename T>
__device__ __forceinline__ T BlockSum(T v, T* scratch) {
  const int lane = static_cast<int>(threadIdx.x) % kWarp, warp = static_cast<int>(threadIdx.x) / kWarp;
  v = WarpSum(v);
  __syncthreads();  // scratch may still be read from a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int n_warps = static_cast<int>(blockDim.x) / kWarp;
  v = lane < n_warps ? scratch[lane] : T(0);
  return WarpSum(v);
}

__device__ __forceinline__ float BlockMax(float v, float* scratch) {
  const int lane = static_cast<int>(threadIdx.x) % kWarp, warp = static_cast<int>(threadIdx.x) / kWarp;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int n_warps = static_cast<int>(blockDim.x) / kWarp;
  v = lane < n_warps ? scratch[lane] : -INFINITY;
  return WarpMax(v);
}

// Whether `blocks` exceeds the grid's x limit (2^31 - 1).
inline bool GridTooLarge(int64_t blocks) { return blocks > 0x7fffffffLL; }

// Blocks for a grid-stride loop over n items with `threads` per block (capped; the loop covers
// the rest).
inline unsigned GridFor(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 16 ? 65535 * 16 : blocks));
}

}  // namespace muninn::cuda
