// Training kernels of train_kernels.h, row-wise and element-wise: LoRA dropout, RMSNorm forward
// and backward, SwiGLU forward and backward, y += x and AdamW. Plain, deterministic code: every
// output element is written by one thread (or one block per row) that walks its inputs in a fixed
// order; row sums use a fixed shuffle tree over a fixed block size; nothing uses atomics.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernel_util.cuh"
#include "cuda/train_kernels.h"

namespace muninn::cuda {
namespace {

constexpr int kThreads = 256;

// Whether a 1-d grid of `blocks` exceeds CUDA's x limit (the launcher then returns
// cudaErrorInvalidConfiguration).

// ---- LoRA dropout ----

// backward_linear.cc's Mix and Kept, bit for bit.
__device__ __forceinline__ uint64_t Mix(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

__device__ __forceinline__ bool Kept(uint64_t seed, uint64_t index, float p) {
  // 24 bits convert to float exactly and the scale is a power of two: u is exact.
  const float u =
      static_cast<float>(static_cast<uint32_t>(Mix(seed, index) >> 40)) * (1.0f / 16777216.0f);
  return u >= p;
}

__global__ void LoraDropoutKernel(const float* x, int64_t n, float p, float keep_scale,
                                  uint64_t seed, float* xd) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    xd[i] = Kept(seed, static_cast<uint64_t>(i), p) ? x[i] * keep_scale : 0.0f;
  }
}

__global__ void LoraDropoutAccumulateKernel(const float* dxd, int64_t n, float p, float keep_scale,
                                            uint64_t seed, float* dx) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // Product rounded, then added (the CPU's dx[i] += dxd[i] * keep_scale, no fused multiply-add).
    if (Kept(seed, static_cast<uint64_t>(i), p)) {
      dx[i] = __fadd_rn(dx[i], __fmul_rn(dxd[i], keep_scale));
    }
  }
}

// ---- RMSNorm ----

__global__ void RmsNormTrainForwardKernel(const float* x, const float* w, int64_t d, float eps,
                                          float* y) {
  __shared__ double scratch[32];
  const int64_t r = blockIdx.x;
  const float* xr = x + r * d;
  float* yr = y + r * d;
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    ss += static_cast<double>(xr[i]) * xr[i];  // exact product
  }
  ss = BlockSum(ss, scratch);
  const auto rstd = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(d) + eps));
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) yr[i] = xr[i] * rstd * w[i];
}

__global__ void RmsNormBackwardRowsKernel(const float* x, const float* w, const float* dy,
                                          int64_t d, float eps, float* dx, double* rstd_out) {
  __shared__ double scratch[32];
  const int64_t r = blockIdx.x;
  const float* xr = x + r * d;
  const float* gr = dy + r * d;
  float* dxr = dx + r * d;
  double ss = 0.0, gx = 0.0;  // Σ x², Σ (dy ∘ w) ∘ x
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const double g = w != nullptr ? static_cast<double>(gr[i]) * w[i] : gr[i];
    ss += static_cast<double>(xr[i]) * xr[i];
    gx += g * xr[i];
  }
  ss = BlockSum(ss, scratch);
  gx = BlockSum(gx, scratch);
  const double rstd = 1.0 / sqrt(ss / static_cast<double>(d) + eps);
  // dx = rstd · g - x · rstd³ · Σ(g ∘ x) / d
  const double c = rstd * rstd * rstd * gx / static_cast<double>(d);
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const double g = w != nullptr ? static_cast<double>(gr[i]) * w[i] : gr[i];
    dxr[i] = static_cast<float>(rstd * g - c * xr[i]);
  }
  if (threadIdx.x == 0) rstd_out[r] = rstd;
}

// grid (row chunks, column blocks): partial[chunk, i] = Σ over the chunk's rows, in order.
__global__ void RmsNormWeightPartialKernel(const float* x, const float* dy, const double* rstd,
                                           int64_t rows, int64_t d, double* partial) {
  const int64_t i = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= d) return;
  const int64_t chunk = blockIdx.x;
  const int64_t r0 = chunk * kRmsNormRowsPerChunk;
  const int64_t r1 = r0 + kRmsNormRowsPerChunk < rows ? r0 + kRmsNormRowsPerChunk : rows;
  double s = 0.0;
  for (int64_t r = r0; r < r1; ++r) {
    s += static_cast<double>(dy[r * d + i]) * x[r * d + i] * rstd[r];
  }
  partial[chunk * d + i] = s;
}

// dw[i] += (float)Σ_chunks partial[chunk, i], chunks in order.
__global__ void RmsNormWeightSumKernel(const double* partial, int64_t n_chunks, int64_t d,
                                       float* dw) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= d) return;
  double s = 0.0;
  for (int64_t c = 0; c < n_chunks; ++c) s += partial[c * d + i];
  dw[i] += static_cast<float>(s);
}

// ---- element-wise ----

__global__ void SwiGluBackwardKernel(const float* gate, const float* up, const float* dy, int64_t n,
                                     float* dgate, float* dup) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    const float sig = 1.0f / (1.0f + expf(-g));
    const float silu = g * sig;
    const float gy = dy[i];
    dgate[i] = gy * up[i] * sig * (1.0f + g * (1.0f - sig));
    dup[i] = gy * silu;
  }
}

// optimizer.cc's loop body; __f*_rn keep each operation rounded on its own as on the CPU.
__global__ void AdamWKernel(const AdamWLaunch a, const float* grad, int64_t n, float* param,
                            float* m, float* v) {
  const float one_minus_b1 = __fsub_rn(1.0f, a.beta1);
  const float one_minus_b2 = __fsub_rn(1.0f, a.beta2);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = grad[i];
    float p = __fmul_rn(param[i], a.decay);
    const float mi = __fadd_rn(__fmul_rn(a.beta1, m[i]), __fmul_rn(one_minus_b1, g));
    const float vi = __fadd_rn(__fmul_rn(a.beta2, v[i]), __fmul_rn(__fmul_rn(one_minus_b2, g), g));
    m[i] = mi;
    v[i] = vi;
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), a.bc2_sqrt), a.eps);
    p = __fsub_rn(p, __fdiv_rn(__fmul_rn(a.step_size, mi), denom));
    param[i] = p;
  }
}

}  // namespace

cudaError_t LaunchLoraDropout(const float* x, int64_t n, float p, float keep_scale, uint64_t seed,
                              float* xd, cudaStream_t stream) {
  LoraDropoutKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(x, n, p, keep_scale, seed, xd);
  return cudaGetLastError();
}

cudaError_t LaunchLoraDropoutAccumulate(const float* dxd, int64_t n, float p, float keep_scale,
                                        uint64_t seed, float* dx, cudaStream_t stream) {
  LoraDropoutAccumulateKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(dxd, n, p, keep_scale,
                                                                             seed, dx);
  return cudaGetLastError();
}

cudaError_t LaunchRmsNormTrainForward(const float* x, const float* w, int64_t rows, int64_t d,
                                      float eps, float* y, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (GridTooLarge(rows)) return cudaErrorInvalidConfiguration;
  RmsNormTrainForwardKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, w, d, eps, y);
  return cudaGetLastError();
}

cudaError_t LaunchRmsNormBackwardRows(const float* x, const float* w, const float* dy, int64_t rows,
                                      int64_t d, float eps, float* dx, double* rstd,
                                      cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (GridTooLarge(rows)) return cudaErrorInvalidConfiguration;
  RmsNormBackwardRowsKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, w, dy, d, eps,
                                                                                  dx, rstd);
  return cudaGetLastError();
}

cudaError_t LaunchRmsNormWeightGrad(const float* x, const float* dy, const double* rstd,
                                    int64_t rows, int64_t d, double* partial, float* dw,
                                    cudaStream_t stream) {
  if (rows == 0 || d == 0) return cudaSuccess;
  const int64_t chunks = RmsNormWeightChunks(rows);
  const int64_t col_blocks = (d + kThreads - 1) / kThreads;
  if (GridTooLarge(chunks) || col_blocks > 65535) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(col_blocks));
  RmsNormWeightPartialKernel<<<grid, kThreads, 0, stream>>>(x, dy, rstd, rows, d, partial);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  RmsNormWeightSumKernel<<<static_cast<unsigned>(col_blocks), kThreads, 0, stream>>>(partial,
                                                                                     chunks, d, dw);
  return cudaGetLastError();
}

cudaError_t LaunchSwiGluBackward(const float* gate, const float* up, const float* dy, int64_t n,
                                 float* dgate, float* dup, cudaStream_t stream) {
  SwiGluBackwardKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(gate, up, dy, n, dgate, dup);
  return cudaGetLastError();
}

cudaError_t LaunchAdamW(const AdamWLaunch& a, const float* grad, int64_t n, float* param, float* m,
                        float* v, cudaStream_t stream) {
  AdamWKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(a, grad, n, param, m, v);
  return cudaGetLastError();
}

}  // namespace muninn::cuda
