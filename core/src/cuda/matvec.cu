// Matrix × vector for decode (M <= kMatVecMaxRows activation rows): one warp per output feature
// walks its weight row on the blocks as stored (block_decode.h), each lane taking every 32nd
// chunk, and multiplies with f32 activations; a warp reduction finishes each dot product. The
// weight is read once for all M rows.
#include "cuda/decode_dispatch.cuh"
#include "cuda/kernel_util.cuh"

namespace muninn::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kRows = static_cast<int>(kMatVecMaxRows);

template <class Dec>
__global__ void MatVecKernel(const char* w, int64_t w_row_stride, const char* x,
                             int64_t x_row_stride, int M, int64_t N, int64_t K, char* out,
                             int64_t out_row_stride) {
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (n >= N) return;  // whole warps leave together: the reductions below stay full-warp
  const auto* row = reinterpret_cast<const uint8_t*>(w + n * w_row_stride);
  const int64_t chunks = K / Dec::kChunk;
  float acc[kRows];
#pragma unroll
  for (int m = 0; m < kRows; ++m) acc[m] = 0.0f;
  for (int64_t c = lane; c < chunks; c += kWarp) {
    float y[Dec::kChunk];
    Dec::Decode(row, c, y);
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      if (m < M) {
        const float* xm = reinterpret_cast<const float*>(x + m * x_row_stride) + c * Dec::kChunk;
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < Dec::kChunk; ++j) s += y[j] * xm[j];
        acc[m] += s;
      }
    }
  }
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    if (m < M) {
      const float v = WarpSum(acc[m]);
      if (lane == 0) reinterpret_cast<float*>(out + m * out_row_stride)[n] = v;
    }
  }
}

}  // namespace

cudaError_t LaunchMatVec(DType w_dtype, const char* w, int64_t w_row_stride, const char* x,
                         int64_t x_row_stride, int64_t M, int64_t N, int64_t K, char* out,
                         int64_t out_row_stride, cudaStream_t stream) {
  if (M > kMatVecMaxRows) return cudaErrorInvalidValue;
  const int64_t blocks = (N + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  return DispatchDecoder(w_dtype, [&](auto dec) {
    using Dec = decltype(dec);
    MatVecKernel<Dec><<<static_cast<unsigned>(blocks), kWarpsPerBlock * kWarp, 0, stream>>>(
        w, w_row_stride, x, x_row_stride, static_cast<int>(M), N, K, out, out_row_stride);
  });
}

}  // namespace muninn::cuda
