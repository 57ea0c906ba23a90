// The portable reference row kernels (see eltwise_kernels.h). They favour accuracy over speed:
// reductions accumulate in double and transcendental functions come from libm, so the vector
// kernels can be checked against them and both against a float64 reference.
#include <cmath>

#include "cpu/eltwise_kernels.h"

namespace muninn::cpu {
namespace {

void RmsNormRow(const float* x, const float* w, float eps, float* y, int64_t n) {
  if (n == 0) return;
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float r = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  // Normalise first, then apply the weight (Huginn/Llama order).
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i] * r;
    y[i] = w ? v * w[i] : v;
  }
}

void LayerNormRow(const float* x, const float* w, const float* b, float eps, float* y, int64_t n) {
  if (n == 0) return;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const double mean = sum / static_cast<double>(n);
  double var = 0.0;  // two passes: no cancellation when |mean| >> stddev
  for (int64_t i = 0; i < n; ++i) {
    const double d = x[i] - mean;
    var += d * d;
  }
  const float r = static_cast<float>(1.0 / std::sqrt(var / static_cast<double>(n) + eps));
  // Centre in two float steps: m is the mean rounded to float and c what that rounding lost, so
  // (x - m) is exact for x near m and the result keeps full precision when |mean| >> stddev.
  const float m = static_cast<float>(mean);
  const float c = static_cast<float>(mean - m);
  for (int64_t i = 0; i < n; ++i) {
    float v = ((x[i] - m) - c) * r;
    if (w) v *= w[i];
    if (b) v += b[i];
    y[i] = v;
  }
}

void SoftmaxRow(const float* x, float scale, float* y, int64_t n) {
  if (n == 0) return;
  float m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) m = std::fmax(m, x[i] * scale);
  if (m == -INFINITY) {
    for (int64_t i = 0; i < n; ++i) y[i] = 0.0f;
    return;
  }
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float e = std::exp(x[i] * scale - m);
    y[i] = e;
    sum += e;
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) y[i] *= inv;
}

float Silu(float x) { return x / (1.0f + std::exp(-x)); }

void SiluRow(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = Silu(x[i]);
}

void GeluErfRow(const float* x, float* y, int64_t n) {
  // erfc keeps the relative accuracy of the small negative tail: 1 + erf(v) = erfc(-v).
  for (int64_t i = 0; i < n; ++i) y[i] = 0.5f * x[i] * std::erfc(-x[i] * 0.70710678118654752f);
}

void GeluTanhRow(const float* x, float* y, int64_t n) {
  // 1 + tanh(u) = 2 / (1 + exp(-2u)): no cancellation for negative u.
  constexpr float kC = 0.79788456080286536f;  // sqrt(2 / pi)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float u = kC * (v + 0.044715f * v * v * v);
    y[i] = v / (1.0f + std::exp(-2.0f * u));
  }
}

void SwiGluRow(const float* g, const float* u, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = Silu(g[i]) * u[i];
}

void AddRow(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void MulRow(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i];
}

void ScaleRow(const float* x, float s, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * s;
}

void RopeHalves(const float* x, int64_t xs, float* y, int64_t ys, int64_t n_head, const float* cos,
                const float* sin, int64_t half) {
  for (int64_t h = 0; h < n_head; ++h) {
    const float* xh = x + h * xs;
    float* yh = y + h * ys;
    for (int64_t i = 0; i < half; ++i) {
      const float a = xh[i];
      const float b = xh[i + half];
      yh[i] = a * cos[i] - b * sin[i];
      yh[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

void RopeInterleaved(const float* x, int64_t xs, float* y, int64_t ys, int64_t n_head,
                     const float* cos2, const float* sin2, int64_t n_rot) {
  for (int64_t h = 0; h < n_head; ++h) {
    const float* xh = x + h * xs;
    float* yh = y + h * ys;
    for (int64_t i = 0; i < n_rot; i += 2) {
      const float a = xh[i];
      const float b = xh[i + 1];
      yh[i] = a * cos2[i] + b * sin2[i];              // sin2[i] = -s
      yh[i + 1] = b * cos2[i + 1] + a * sin2[i + 1];  // sin2[i+1] = +s
    }
  }
}

constexpr EltwiseKernels kScalarKernels = {
    RmsNormRow, LayerNormRow, SoftmaxRow, SiluRow,  GeluErfRow, GeluTanhRow,
    SwiGluRow,  AddRow,       MulRow,     ScaleRow, RopeHalves, RopeInterleaved,
};

}  // namespace

const EltwiseKernels& ScalarEltwiseKernels() { return kScalarKernels; }

const EltwiseKernels& EltwiseKernelsFor(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return Avx512EltwiseKernels();
    case CpuIsa::kAvx2:
      return Avx2EltwiseKernels();
    case CpuIsa::kScalar:
      break;
  }
  return ScalarEltwiseKernels();
}

}  // namespace muninn::cpu
