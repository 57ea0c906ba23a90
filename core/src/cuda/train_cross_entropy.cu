// The fused cross-entropy's per-row kernels (train_kernels.h; the tiling and the cuBLAS logits are
// in cuda_train_ops.cc): gather / scatter of the supervised rows, the online log-sum-exp over
// vocabulary tiles (one block per row, exp summed in double by a fixed tree), the per-row loss,
// and the gradient tile grad_scale · (softmax - onehot).
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernel_util.cuh"
#include "cuda/train_kernels.h"

namespace muninn::cuda {
namespace {

constexpr int kThreads = 256;

// Whether a 1-d grid of `blocks` exceeds CUDA's x limit (the launcher then returns
// cudaErrorInvalidConfiguration).

__global__ void GatherRowsKernel(const float* src, const int32_t* rows, int64_t n, int64_t cols,
                                 float* dst) {
  const int64_t total = n * cols;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / cols, c = e % cols;
    dst[e] = src[static_cast<int64_t>(rows[i]) * cols + c];
  }
}

__global__ void ScatterRowsKernel(const float* src, const int32_t* rows, int64_t n, int64_t cols,
                                  float* dst) {
  const int64_t total = n * cols;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / cols, c = e % cols;
    dst[static_cast<int64_t>(rows[i]) * cols + c] = src[e];
  }
}

__global__ void CrossEntropyInitKernel(int64_t n, float* row_max, double* row_sum,
                                       float* label_logit) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    row_max[i] = -INFINITY;
    row_sum[i] = 0.0;
    label_logit[i] = 0.0f;
  }
}

// cross_entropy.cc's pass A for one row and one tile: m = max(running max, tile max),
// sum = sum · exp(old max - m) + Σ exp(z - m) (exp in float, summed in double).
__global__ void CrossEntropyTileLseKernel(const float* tile, int64_t nv, int64_t v0,
                                          const int32_t* labels, float* row_max, double* row_sum,
                                          float* label_logit) {
  __shared__ float fscratch[32];
  __shared__ double dscratch[32];
  const int64_t i = blockIdx.x;
  const float* z = tile + i * nv;
  const float old_max = row_max[i];
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < nv; j += blockDim.x) m = fmaxf(m, z[j]);
  m = fmaxf(old_max, BlockMax(m, fscratch));
  double s = 0.0;
  for (int64_t j = threadIdx.x; j < nv; j += blockDim.x) s += expf(z[j] - m);
  s = BlockSum(s, dscratch);
  if (threadIdx.x == 0) {
    row_sum[i] = row_sum[i] * exp(static_cast<double>(old_max) - m) + s;
    row_max[i] = m;
    const int64_t y = labels[i];
    if (y >= v0 && y < v0 + nv) label_logit[i] = z[y - v0];
  }
}

__global__ void CrossEntropyFinishKernel(const float* row_max, const double* row_sum,
                                         const float* label_logit, int64_t nb, float* lse,
                                         double* loss) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < nb;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double l = static_cast<double>(row_max[i]) + log(row_sum[i]);
    lse[i] = static_cast<float>(l);
    loss[i] = l - label_logit[i];
  }
}

__global__ void CrossEntropyTileGradKernel(float* tile, int64_t nb, int64_t nv, int64_t v0,
                                           const int32_t* labels, const float* lse,
                                           float grad_scale) {
  const int64_t total = nb * nv;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / nv, j = e % nv;
    float g = grad_scale * expf(tile[e] - lse[i]);
    if (labels[i] == v0 + j) g -= grad_scale;
    tile[e] = g;
  }
}

}  // namespace

cudaError_t LaunchGatherRows(const float* src, const int32_t* rows, int64_t n, int64_t cols,
                             float* dst, cudaStream_t stream) {
  GatherRowsKernel<<<GridFor(n * cols, kThreads), kThreads, 0, stream>>>(src, rows, n, cols, dst);
  return cudaGetLastError();
}

cudaError_t LaunchScatterRows(const float* src, const int32_t* rows, int64_t n, int64_t cols,
                              float* dst, cudaStream_t stream) {
  ScatterRowsKernel<<<GridFor(n * cols, kThreads), kThreads, 0, stream>>>(src, rows, n, cols, dst);
  return cudaGetLastError();
}

cudaError_t LaunchCrossEntropyInit(int64_t n, float* row_max, double* row_sum, float* label_logit,
                                   cudaStream_t stream) {
  CrossEntropyInitKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(n, row_max, row_sum,
                                                                        label_logit);
  return cudaGetLastError();
}

cudaError_t LaunchCrossEntropyTileLse(const float* tile, int64_t nb, int64_t nv, int64_t v0,
                                      const int32_t* labels, float* row_max, double* row_sum,
                                      float* label_logit, cudaStream_t stream) {
  if (nb == 0) return cudaSuccess;
  if (GridTooLarge(nb)) return cudaErrorInvalidConfiguration;
  CrossEntropyTileLseKernel<<<static_cast<unsigned>(nb), kThreads, 0, stream>>>(
      tile, nv, v0, labels, row_max, row_sum, label_logit);
  return cudaGetLastError();
}

cudaError_t LaunchCrossEntropyFinish(const float* row_max, const double* row_sum,
                                     const float* label_logit, int64_t nb, float* lse, double* loss,
                                     cudaStream_t stream) {
  CrossEntropyFinishKernel<<<GridFor(nb, kThreads), kThreads, 0, stream>>>(
      row_max, row_sum, label_logit, nb, lse, loss);
  return cudaGetLastError();
}

cudaError_t LaunchCrossEntropyTileGrad(float* tile, int64_t nb, int64_t nv, int64_t v0,
                                       const int32_t* labels, const float* lse, float grad_scale,
                                       cudaStream_t stream) {
  CrossEntropyTileGradKernel<<<GridFor(nb * nv, kThreads), kThreads, 0, stream>>>(
      tile, nb, nv, v0, labels, lse, grad_scale);
  return cudaGetLastError();
}

}  // namespace muninn::cuda
