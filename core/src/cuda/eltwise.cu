// Element-wise kernels: SiLU, GELU (erf / tanh), Scale, Add, Mul, SwiGLU over f32 rows. The
// formulas are the CPU reference's (core/src/cpu/eltwise_scalar.cc) with CUDA's libm.
#include "cuda/kernel_util.cuh"

namespace muninn::cuda {
namespace {

constexpr int kThreads = 256;

template <UnaryKind K>
__global__ void UnaryKernel(const char* x, RowLayout lx, char* y, RowLayout ly, int64_t rows,
                            int64_t cols, float s) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const float v = reinterpret_cast<const float*>(x + RowOffset(lx, r))[c];
    float o;
    if constexpr (K == UnaryKind::kSilu) {
      o = SiluF(v);
    } else if constexpr (K == UnaryKind::kGeluErf) {
      o = 0.5f * v * erfcf(-v * 0.70710678118654752f);
    } else if constexpr (K == UnaryKind::kGeluTanh) {
      const float u = 0.79788456080286536f * (v + 0.044715f * v * v * v);
      o = v / (1.0f + expf(-2.0f * u));
    } else {
      o = v * s;
    }
    reinterpret_cast<float*>(y + RowOffset(ly, r))[c] = o;
  }
}

template <BinaryKind K>
__global__ void BinaryKernel(const char* a, RowLayout la, const char* b, RowLayout lb,
                             bool b_broadcast, char* y, RowLayout ly, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const float va = reinterpret_cast<const float*>(a + RowOffset(la, r))[c];
    const float vb = reinterpret_cast<const float*>(b + (b_broadcast ? 0 : RowOffset(lb, r)))[c];
    float o;
    if constexpr (K == BinaryKind::kAdd) {
      o = va + vb;
    } else if constexpr (K == BinaryKind::kMul) {
      o = va * vb;
    } else {
      o = SiluF(va) * vb;
    }
    reinterpret_cast<float*>(y + RowOffset(ly, r))[c] = o;
  }
}

}  // namespace

cudaError_t LaunchUnary(UnaryKind kind, const char* x, const RowLayout& lx, char* y,
                        const RowLayout& ly, int64_t rows, int64_t cols, float s,
                        cudaStream_t stream) {
  const unsigned grid = GridFor(rows * cols, kThreads);
  switch (kind) {
    case UnaryKind::kSilu:
      UnaryKernel<UnaryKind::kSilu><<<grid, kThreads, 0, stream>>>(x, lx, y, ly, rows, cols, s);
      break;
    case UnaryKind::kGeluErf:
      UnaryKernel<UnaryKind::kGeluErf><<<grid, kThreads, 0, stream>>>(x, lx, y, ly, rows, cols, s);
      break;
    case UnaryKind::kGeluTanh:
      UnaryKernel<UnaryKind::kGeluTanh><<<grid, kThreads, 0, stream>>>(x, lx, y, ly, rows, cols, s);
      break;
    case UnaryKind::kScale:
      UnaryKernel<UnaryKind::kScale><<<grid, kThreads, 0, stream>>>(x, lx, y, ly, rows, cols, s);
      break;
  }
  return cudaGetLastError();
}

cudaError_t LaunchBinary(BinaryKind kind, const char* a, const RowLayout& la, const char* b,
                         const RowLayout& lb, bool b_broadcast, char* y, const RowLayout& ly,
                         int64_t rows, int64_t cols, cudaStream_t stream) {
  const unsigned grid = GridFor(rows * cols, kThreads);
  switch (kind) {
    case BinaryKind::kAdd:
      BinaryKernel<BinaryKind::kAdd><<<grid, kThreads, 0, stream>>>(a, la, b, lb, b_broadcast, y,
                                                                    ly, rows, cols);
      break;
    case BinaryKind::kMul:
      BinaryKernel<BinaryKind::kMul><<<grid, kThreads, 0, stream>>>(a, la, b, lb, b_broadcast, y,
                                                                    ly, rows, cols);
      break;
    case BinaryKind::kSwiGlu:
      BinaryKernel<BinaryKind::kSwiGlu><<<grid, kThreads, 0, stream>>>(a, la, b, lb, b_broadcast,
                                                                       y, ly, rows, cols);
      break;
  }
  return cudaGetLastError();
}

}  // namespace muninn::cuda
