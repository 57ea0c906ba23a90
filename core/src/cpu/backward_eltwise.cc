// Backward of the row-wise ops on the trained path: RMSNorm, RoPE, SwiGLU (contracts in
// backward.h). Scalar loops the compiler vectorises; per-row reductions in double.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "cpu/cpu_ops.h"
#include "muninn/core/backward.h"
#include "muninn/core/buffer.h"
#include "muninn/core/check.h"
#include "muninn/core/cpu_features.h"

namespace muninn {
namespace {

// Rows per block of RmsNormBackward: the unit of parallel work and of the dw partial sums.
constexpr int64_t kNormRowsPerBlock = 16;

}  // namespace

void RmsNormBackward(ThreadPool* pool, const float* x, const float* w, const float* dy,
                     int64_t rows, int64_t d, float eps, float* dx, float* dw) {
  MUNINN_CHECK(rows >= 0 && d > 0 && eps >= 0.0f);
  if (rows == 0) return;
  const int64_t n_blocks = (rows + kNormRowsPerBlock - 1) / kNormRowsPerBlock;
  // dw partials per block, summed in block order below: independent of the thread count.
  std::vector<double> partial(dw != nullptr ? static_cast<size_t>(n_blocks * d) : 0, 0.0);
  ParallelFor(pool, n_blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      double* pw = dw != nullptr ? partial.data() + blk * d : nullptr;
      const int64_t r_end = std::min(rows, (blk + 1) * kNormRowsPerBlock);
      for (int64_t r = blk * kNormRowsPerBlock; r < r_end; ++r) {
        const float* xr = x + r * d;
        const float* gr = dy + r * d;
        float* dxr = dx + r * d;
        double ss = 0.0, gx = 0.0;  // Σ x², Σ (dy ∘ w) ∘ x
        for (int64_t i = 0; i < d; ++i) {
          const double g = w != nullptr ? static_cast<double>(gr[i]) * w[i] : gr[i];
          ss += static_cast<double>(xr[i]) * xr[i];
          gx += g * xr[i];
        }
        const double rstd = 1.0 / std::sqrt(ss / static_cast<double>(d) + eps);
        // dx = rstd · g - x · rstd³ · Σ(g ∘ x) / d
        const double c = rstd * rstd * rstd * gx / static_cast<double>(d);
        for (int64_t i = 0; i < d; ++i) {
          const double g = w != nullptr ? static_cast<double>(gr[i]) * w[i] : gr[i];
          dxr[i] = static_cast<float>(rstd * g - c * xr[i]);
        }
        if (pw != nullptr) {
          for (int64_t i = 0; i < d; ++i) pw[i] += static_cast<double>(gr[i]) * xr[i] * rstd;
        }
      }
    }
  });
  if (dw != nullptr) {
    for (int64_t i = 0; i < d; ++i) {
      double s = 0.0;
      for (int64_t blk = 0; blk < n_blocks; ++blk) s += partial[static_cast<size_t>(blk * d + i)];
      dw[i] += static_cast<float>(s);
    }
  }
}

Status RopeBackward(ThreadPool* pool, const float* dy, const int32_t* positions, int64_t T,
                    int64_t n_head, int64_t head_dim, const RopeParams& params, float* dx) {
  MUNINN_CHECK(T >= 0 && n_head > 0 && head_dim > 0);
  ASSIGN_OR_RETURN(Tensor neg, Tensor::Empty(DType::kI32, Shape{T}));
  int32_t* np = neg.data_as<int32_t>();
  for (int64_t t = 0; t < T; ++t) {
    if (positions[t] == std::numeric_limits<int32_t>::min()) {
      return InvalidArgumentError("RopeBackward: position INT32_MIN cannot be negated");
    }
    np[t] = -positions[t];
  }
  const Shape shape{T, n_head, head_dim};
  ASSIGN_OR_RETURN(Tensor in, Tensor::WrapHost(const_cast<float*>(dy), DType::kF32, shape));
  ASSIGN_OR_RETURN(Tensor out, Tensor::WrapHost(dx, DType::kF32, shape));
  cpu::CpuContext ctx;
  ctx.pool = pool;
  ctx.isa = GetCpuFeatures().BestIsa();
  return cpu::RopeOp(ctx, in, neg, params, &out).WithContext("RopeBackward");
}

void SwiGluBackward(ThreadPool* pool, const float* gate, const float* up, const float* dy,
                    int64_t n, float* dgate, float* dup) {
  MUNINN_CHECK(n >= 0);
  constexpr int64_t kChunk = 16384;
  ParallelFor(pool, (n + kChunk - 1) / kChunk, 1, [&](int64_t begin, int64_t end) {
    const int64_t lo = begin * kChunk, hi = std::min(n, end * kChunk);
    for (int64_t i = lo; i < hi; ++i) {
      const float g = gate[i];
      const float sig = 1.0f / (1.0f + std::exp(-g));
      const float silu = g * sig;
      const float gy = dy[i];
      dgate[i] = gy * up[i] * sig * (1.0f + g * (1.0f - sig));
      dup[i] = gy * silu;
    }
  });
}

}  // namespace muninn
