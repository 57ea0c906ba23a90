// Backward of matmuls against frozen weights and of LoRA adapters (contracts in backward.h).
// Everything is OpenBLAS sgemm on packed row-major arrays; the dropout mask is a counter-based
// hash so that forward and backward agree without storing it.
#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "muninn/core/backward.h"
#include "muninn/core/check.h"
#include "muninn/core/quant.h"

namespace muninn {
namespace {

blasint B(int64_t x) { return static_cast<blasint>(x); }

// splitmix64's finaliser: a well-mixed 64-bit hash of (seed, index).
uint64_t Mix(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Whether element `index` survives dropout with drop probability p: its hash's top 24 bits as a
// uniform number in [0, 1) compared with p (exact in float for 24 bits).
bool Kept(uint64_t seed, uint64_t index, float p) {
  const auto u = static_cast<float>(Mix(seed, index) >> 40) * (1.0f / 16777216.0f);
  return u >= p;
}

void CheckLora(const LoraDims& d) {
  MUNINN_CHECK(d.m >= 0 && d.n_in > 0 && d.n_out > 0 && d.rank > 0)
      << "LoRA dims m=" << d.m << " n_in=" << d.n_in << " n_out=" << d.n_out << " rank=" << d.rank;
  MUNINN_CHECK(d.dropout >= 0.0f && d.dropout < 1.0f) << "LoRA dropout " << d.dropout;
}

}  // namespace

StatusOr<Tensor> DequantizeToF32(const Tensor& w) {
  if (!w.defined() || !w.device().is_cpu() || w.ndim() != 2 || !w.rows_contiguous() ||
      !CanDequantize(w.dtype())) {
    return InvalidArgumentError(
        "DequantizeToF32: need a 2-d host tensor with packed rows of a "
        "dtype that can be dequantized, got " +
        (w.defined() ? w.DebugString() : std::string("undefined")));
  }
  ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(DType::kF32, w.shape()));
  const int64_t rows = w.dim(0), cols = w.dim(1);
  for (int64_t r = 0; r < rows; ++r) {
    DequantizeRow(w.dtype(), static_cast<const char*>(w.data()) + r * w.stride(0),
                  out.data_as<float>() + r * cols, cols);
  }
  return out;
}

void LinearForward(const float* x, const float* w, int64_t m, int64_t n_out, int64_t n_in,
                   float* y) {
  MUNINN_CHECK(m >= 0 && n_out > 0 && n_in > 0);
  if (m == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B(m), B(n_out), B(n_in), 1.0f, x, B(n_in), w,
              B(n_in), 0.0f, y, B(n_out));
}

void LinearBackwardInput(const float* dy, const float* w, int64_t m, int64_t n_out, int64_t n_in,
                         float* dx, bool accumulate) {
  MUNINN_CHECK(m >= 0 && n_out > 0 && n_in > 0);
  if (m == 0) return;
  // dx[m, n_in] = dy[m, n_out] · w[n_out, n_in]
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B(m), B(n_in), B(n_out), 1.0f, dy,
              B(n_out), w, B(n_in), accumulate ? 1.0f : 0.0f, dx, B(n_in));
}

void LoraDropout(const LoraDims& d, const float* x, float* xd) {
  CheckLora(d);
  const int64_t n = d.m * d.n_in;
  if (d.dropout == 0.0f) {
    if (xd != x) std::copy(x, x + n, xd);
    return;
  }
  const float keep_scale = 1.0f / (1.0f - d.dropout);
  for (int64_t i = 0; i < n; ++i) {
    xd[i] = Kept(d.seed, static_cast<uint64_t>(i), d.dropout) ? x[i] * keep_scale : 0.0f;
  }
}

void LoraForward(const LoraDims& d, const float* xd, const float* a, const float* b, float* u,
                 float* y) {
  CheckLora(d);
  if (d.m == 0) return;
  // u[m, r] = xd[m, n_in] · a[r, n_in]ᵀ
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B(d.m), B(d.rank), B(d.n_in), 1.0f, xd,
              B(d.n_in), a, B(d.n_in), 0.0f, u, B(d.rank));
  // y[m, n_out] += scale · u[m, r] · b[n_out, r]ᵀ
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B(d.m), B(d.n_out), B(d.rank), d.scale, u,
              B(d.rank), b, B(d.rank), 1.0f, y, B(d.n_out));
}

void LoraBackward(const LoraDims& d, const float* dy, const float* xd, const float* u,
                  const float* a, const float* b, float* da, float* db, float* dx) {
  CheckLora(d);
  if (d.m == 0) return;
  // db[n_out, r] += scale · dy[m, n_out]ᵀ · u[m, r]
  if (db != nullptr) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, B(d.n_out), B(d.rank), B(d.m), d.scale, dy,
                B(d.n_out), u, B(d.rank), 1.0f, db, B(d.rank));
  }
  if (da == nullptr && dx == nullptr) return;
  // du[m, r] = scale · dy[m, n_out] · b[n_out, r]
  std::vector<float> du(static_cast<size_t>(d.m * d.rank));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B(d.m), B(d.rank), B(d.n_out), d.scale, dy,
              B(d.n_out), b, B(d.rank), 0.0f, du.data(), B(d.rank));
  // da[r, n_in] += du[m, r]ᵀ · xd[m, n_in]
  if (da != nullptr) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, B(d.rank), B(d.n_in), B(d.m), 1.0f,
                du.data(), B(d.rank), xd, B(d.n_in), 1.0f, da, B(d.n_in));
  }
  if (dx == nullptr) return;
  if (d.dropout == 0.0f) {
    // dx[m, n_in] += du[m, r] · a[r, n_in]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B(d.m), B(d.n_in), B(d.rank), 1.0f,
                du.data(), B(d.rank), a, B(d.n_in), 1.0f, dx, B(d.n_in));
    return;
  }
  std::vector<float> dxd(static_cast<size_t>(d.m * d.n_in));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B(d.m), B(d.n_in), B(d.rank), 1.0f,
              du.data(), B(d.rank), a, B(d.n_in), 0.0f, dxd.data(), B(d.n_in));
  const float keep_scale = 1.0f / (1.0f - d.dropout);
  const int64_t n = d.m * d.n_in;
  for (int64_t i = 0; i < n; ++i) {
    if (Kept(d.seed, static_cast<uint64_t>(i), d.dropout)) {
      dx[i] += dxd[static_cast<size_t>(i)] * keep_scale;
    }
  }
}

}  // namespace muninn
