// Row normalisations (RmsNorm, LayerNorm) and row softmax: one block per row, block reductions in
// f32 (the CPU reference accumulates in double; the per-op bounds of the conformance suite allow
// for the difference).
#include "cuda/kernel_util.cuh"

namespace muninn::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void RmsNormKernel(const char* x, RowLayout lx, const float* w, float eps, char* y,
                              RowLayout ly, int64_t cols) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const float* xr = reinterpret_cast<const float*>(x + RowOffset(lx, r));
  float* yr = reinterpret_cast<float*>(y + RowOffset(ly, r));
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) ss += xr[i] * xr[i];
  ss = BlockSum(ss, scratch);
  const float inv = rsqrtf(ss / static_cast<float>(cols) + eps);
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const float v = xr[i] * inv;
    yr[i] = w != nullptr ? v * w[i] : v;
  }
}

__global__ void LayerNormKernel(const char* x, RowLayout lx, const float* w, const float* bias,
                                float eps, char* y, RowLayout ly, int64_t cols) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const float* xr = reinterpret_cast<const float*>(x + RowOffset(lx, r));
  float* yr = reinterpret_cast<float*>(y + RowOffset(ly, r));
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) sum += xr[i];
  const float mean = BlockSum(sum, scratch) / static_cast<float>(cols);
  float var = 0.0f;  // two passes: no cancellation when |mean| >> stddev
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const float d = xr[i] - mean;
    var += d * d;
  }
  const float inv = rsqrtf(BlockSum(var, scratch) / static_cast<float>(cols) + eps);
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    float v = (xr[i] - mean) * inv;
    if (w != nullptr) v *= w[i];
    if (bias != nullptr) v += bias[i];
    yr[i] = v;
  }
}

__global__ void SoftmaxKernel(const char* x, RowLayout lx, float scale, char* y, RowLayout ly,
                              int64_t cols) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const float* xr = reinterpret_cast<const float*>(x + RowOffset(lx, r));
  float* yr = reinterpret_cast<float*>(y + RowOffset(ly, r));
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) m = fmaxf(m, xr[i] * scale);
  m = BlockMax(m, scratch);
  if (m == -INFINITY) {
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) yr[i] = 0.0f;
    return;
  }
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const float e = expf(xr[i] * scale - m);
    yr[i] = e;  // in place is safe: each element is read before this thread writes it
    sum += e;
  }
  const float inv = 1.0f / BlockSum(sum, scratch);
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) yr[i] *= inv;
}

}  // namespace

cudaError_t LaunchRmsNorm(const char* x, const RowLayout& lx, const float* w, float eps, char* y,
                          const RowLayout& ly, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows > 0x7fffffffLL) return cudaErrorInvalidConfiguration;  // grid x limit
  RmsNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, lx, w, eps, y, ly, cols);
  return cudaGetLastError();
}

cudaError_t LaunchLayerNorm(const char* x, const RowLayout& lx, const float* w, const float* bias,
                            float eps, char* y, const RowLayout& ly, int64_t rows, int64_t cols,
                            cudaStream_t stream) {
  if (rows > 0x7fffffffLL) return cudaErrorInvalidConfiguration;  // grid x limit
  LayerNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, lx, w, bias, eps, y,
                                                                          ly, cols);
  return cudaGetLastError();
}

cudaError_t LaunchSoftmax(const char* x, const RowLayout& lx, float scale, char* y,
                          const RowLayout& ly, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows > 0x7fffffffLL) return cudaErrorInvalidConfiguration;  // grid x limit
  SoftmaxKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, lx, scale, y, ly, cols);
  return cudaGetLastError();
}

}  // namespace muninn::cuda
