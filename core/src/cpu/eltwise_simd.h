// Private to the CPU backend: the vector row kernels of eltwise_kernels.h written once over a
// vector-traits type V, and instantiated by eltwise_avx2.cc (8 lanes) and eltwise_avx512.cc
// (16 lanes). Include this header ONLY from a file compiled with that ISA's flags.
//
// Every function here is a template on V, and each ISA file defines its V in an anonymous
// namespace, so the instantiations have internal linkage: the linker can never merge an AVX-512
// copy into code that runs on an AVX2-only CPU.
//
// V provides: F (float vector), M (lane mask), kWidth, Zero, Set1, Load, Store,
// LoadN(p, n, fill) / StoreN(p, v, n) for the first n < kWidth lanes (others untouched, never
// read past p + n), Add, Sub, Mul, Div, Fma(a, b, c) = a*b + c, Max(a, b) / Min(a, b) (return b
// when either is NaN, as the x86 instructions do), Round (to nearest even), Pow2i(k) = 2^k for
// integral k in [-126, 127], Less(a, b) -> M, Select(m, if_true, if_false), SwapPairs
// (lane 2i <-> 2i+1), ReduceAdd, ReduceMax.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cpu/eltwise_kernels.h"

namespace muninn::cpu::simd {

// exp(x) for every lane. x = k ln2 + r with k = round(x / ln2) and |r| <= ln2/2; exp(r) by its
// Taylor series to degree 7 (truncation < 6e-9 relative), times 2^k built in the exponent bits.
// ln2 is split in a part with few mantissa bits (k * kLn2Hi is exact) and the remainder, so r
// keeps full precision. Below -87.33 (where 2^k would be subnormal) the result is 0; inputs are
// clamped above at 88.37, so huge arguments give a large finite value (all callers saturate).
template <class V>
inline typename V::F Exp(typename V::F x) {
  using F = typename V::F;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;              // 355/512: 9 significant bits
  constexpr float kLn2Lo = -2.12194440054690583e-4f;  // ln2 - kLn2Hi
  constexpr float kMin = -87.3365479f;                // ~ -126 ln2
  constexpr float kMax = 88.3762589f;                 // ~ 127.5 ln2
  const auto underflow = V::Less(x, V::Set1(kMin));
  F xc = V::Max(V::Set1(kMin), x);  // x second: NaN propagates
  xc = V::Min(V::Set1(kMax), xc);
  const F k = V::Round(V::Mul(xc, V::Set1(kLog2e)));
  F r = V::Fma(k, V::Set1(-kLn2Hi), xc);
  r = V::Fma(k, V::Set1(-kLn2Lo), r);
  F p = V::Set1(1.0f / 5040.0f);
  p = V::Fma(p, r, V::Set1(1.0f / 720.0f));
  p = V::Fma(p, r, V::Set1(1.0f / 120.0f));
  p = V::Fma(p, r, V::Set1(1.0f / 24.0f));
  p = V::Fma(p, r, V::Set1(1.0f / 6.0f));
  p = V::Fma(p, r, V::Set1(0.5f));
  p = V::Fma(p, r, V::Set1(1.0f));
  p = V::Fma(p, r, V::Set1(1.0f));
  return V::Select(underflow, V::Zero(), V::Mul(p, V::Pow2i(k)));
}

// x * sigmoid(x) = x / (1 + exp(-x)); exp saturates for x << 0, so the quotient goes to -0.
template <class V>
inline typename V::F Silu(typename V::F x) {
  const auto e = Exp<V>(V::Sub(V::Zero(), x));
  return V::Div(x, V::Add(V::Set1(1.0f), e));
}

// GELU, erf form. With z = |x| / sqrt 2, q ~ erfc(z) by Abramowitz & Stegun 7.1.26
// (|error in erf| <= 1.5e-7): q = t (a1 + t (a2 + ... + t a5)) exp(-z²), t = 1 / (1 + p z).
// 1 + erf(x/sqrt2) is 2 - q for x >= 0 and q for x < 0 (no cancellation in the negative tail).
template <class V>
inline typename V::F GeluErf(typename V::F x) {
  using F = typename V::F;
  const auto neg = V::Less(x, V::Zero());
  const F z = V::Mul(V::Max(V::Sub(V::Zero(), x), x), V::Set1(0.70710678118654752f));
  const F t = V::Div(V::Set1(1.0f), V::Fma(z, V::Set1(0.3275911f), V::Set1(1.0f)));
  F p = V::Set1(1.061405429f);
  p = V::Fma(p, t, V::Set1(-1.453152027f));
  p = V::Fma(p, t, V::Set1(1.421413741f));
  p = V::Fma(p, t, V::Set1(-0.284496736f));
  p = V::Fma(p, t, V::Set1(0.254829592f));
  p = V::Mul(p, t);
  const F q = V::Mul(p, Exp<V>(V::Sub(V::Zero(), V::Mul(z, z))));
  const F one_plus_erf = V::Select(neg, q, V::Sub(V::Set1(2.0f), q));
  return V::Mul(V::Mul(V::Set1(0.5f), x), one_plus_erf);
}

// GELU, tanh form: x/2 (1 + tanh u) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x³).
template <class V>
inline typename V::F GeluTanh(typename V::F x) {
  using F = typename V::F;
  const F x3 = V::Mul(V::Mul(x, x), x);
  const F u = V::Mul(V::Set1(0.79788456080286536f), V::Fma(x3, V::Set1(0.044715f), x));
  const F e = Exp<V>(V::Mul(u, V::Set1(-2.0f)));
  return V::Div(x, V::Add(V::Set1(1.0f), e));
}

// Applies fn lane-wise over n packed floats.
template <class V, class Fn>
inline void MapUnary(const float* x, float* y, int64_t n, Fn fn) {
  int64_t i = 0;
  for (; i + V::kWidth <= n; i += V::kWidth) V::Store(y + i, fn(V::Load(x + i)));
  if (i < n) V::StoreN(y + i, fn(V::LoadN(x + i, n - i, 0.0f)), n - i);
}

template <class V, class Fn>
inline void MapBinary(const float* a, const float* b, float* y, int64_t n, Fn fn) {
  int64_t i = 0;
  for (; i + V::kWidth <= n; i += V::kWidth) {
    V::Store(y + i, fn(V::Load(a + i), V::Load(b + i)));
  }
  if (i < n) {
    V::StoreN(y + i, fn(V::LoadN(a + i, n - i, 0.0f), V::LoadN(b + i, n - i, 0.0f)), n - i);
  }
}

// Sum of fn(x) over n floats with four independent accumulators (latency hiding, and smaller
// rounding error than one running sum). fn(0) must be 0: the tail is zero-filled.
template <class V, class Fn>
inline float SumMap(const float* x, int64_t n, Fn fn) {
  using F = typename V::F;
  constexpr int64_t W = V::kWidth;
  F s0 = V::Zero(), s1 = V::Zero(), s2 = V::Zero(), s3 = V::Zero();
  int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    s0 = V::Add(s0, fn(V::Load(x + i)));
    s1 = V::Add(s1, fn(V::Load(x + i + W)));
    s2 = V::Add(s2, fn(V::Load(x + i + 2 * W)));
    s3 = V::Add(s3, fn(V::Load(x + i + 3 * W)));
  }
  for (; i + W <= n; i += W) s0 = V::Add(s0, fn(V::Load(x + i)));
  if (i < n) s1 = V::Add(s1, fn(V::LoadN(x + i, n - i, 0.0f)));
  return V::ReduceAdd(V::Add(V::Add(s0, s1), V::Add(s2, s3)));
}

template <class V>
void RmsNormRow(const float* x, const float* w, float eps, float* y, int64_t n) {
  using F = typename V::F;
  if (n == 0) return;
  const float ss = SumMap<V>(x, n, [](F v) { return V::Mul(v, v); });
  const F r = V::Set1(
      static_cast<float>(1.0 / std::sqrt(static_cast<double>(ss) / static_cast<double>(n) + eps)));
  if (w) {
    MapBinary<V>(x, w, y, n, [&](F v, F wv) { return V::Mul(V::Mul(v, r), wv); });
  } else {
    MapUnary<V>(x, y, n, [&](F v) { return V::Mul(v, r); });
  }
}

template <class V>
void LayerNormRow(const float* x, const float* w, const float* b, float eps, float* y, int64_t n) {
  using F = typename V::F;
  if (n == 0) return;
  // Corrected two-pass: m is the float mean, which can be off by half an ulp of |mean| (a lot
  // when |mean| >> stddev). The second pass sums d = x - m and d² together; c = mean(d) is what
  // m missed, so the centred values are (x - m) - c and the variance is mean(d²) - c².
  const float mean = SumMap<V>(x, n, [](F v) { return v; }) / static_cast<float>(n);
  const F m = V::Set1(mean);
  constexpr int64_t W = V::kWidth;
  F sd0 = V::Zero(), sd1 = V::Zero(), sq0 = V::Zero(), sq1 = V::Zero();
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const F d0 = V::Sub(V::Load(x + i), m);
    const F d1 = V::Sub(V::Load(x + i + W), m);
    sd0 = V::Add(sd0, d0);
    sd1 = V::Add(sd1, d1);
    sq0 = V::Fma(d0, d0, sq0);
    sq1 = V::Fma(d1, d1, sq1);
  }
  for (; i < n; i += W) {
    // Dead tail lanes are filled with the mean, so they add 0 to both sums.
    const F d = V::Sub(n - i >= W ? V::Load(x + i) : V::LoadN(x + i, n - i, mean), m);
    sd0 = V::Add(sd0, d);
    sq0 = V::Fma(d, d, sq0);
  }
  const double inv_n = 1.0 / static_cast<double>(n);
  const double c = static_cast<double>(V::ReduceAdd(V::Add(sd0, sd1))) * inv_n;
  const double var =
      std::max(static_cast<double>(V::ReduceAdd(V::Add(sq0, sq1))) * inv_n - c * c, 0.0);
  const F r = V::Set1(static_cast<float>(1.0 / std::sqrt(var + eps)));
  const F cv = V::Set1(static_cast<float>(c));
  const F one = V::Set1(1.0f), zero = V::Zero();
  for (i = 0; i < n; i += W) {
    const int64_t k = n - i;
    const bool full = k >= W;
    const F xv = full ? V::Load(x + i) : V::LoadN(x + i, k, 0.0f);
    const F wv = w ? (full ? V::Load(w + i) : V::LoadN(w + i, k, 1.0f)) : one;
    const F bv = b ? (full ? V::Load(b + i) : V::LoadN(b + i, k, 0.0f)) : zero;
    const F v = V::Fma(V::Mul(V::Sub(V::Sub(xv, m), cv), r), wv, bv);
    if (full) {
      V::Store(y + i, v);
    } else {
      V::StoreN(y + i, v, k);
    }
  }
}

template <class V>
void SoftmaxRow(const float* x, float scale, float* y, int64_t n) {
  using F = typename V::F;
  constexpr int64_t W = V::kWidth;
  if (n == 0) return;
  const F s = V::Set1(scale);
  F mx = V::Set1(-INFINITY);
  int64_t i = 0;
  for (; i + W <= n; i += W) mx = V::Max(mx, V::Mul(V::Load(x + i), s));
  // The tail's fill must be neutral for the max after scaling: -inf * scale is wrong for
  // scale < 0, so fill with an element that is really there (x[i]).
  if (i < n) mx = V::Max(mx, V::Mul(V::LoadN(x + i, n - i, x[i]), s));
  const float m = V::ReduceMax(mx);
  if (m == -INFINITY) {
    MapUnary<V>(x, y, n, [](F) { return V::Zero(); });
    return;
  }
  const F neg_m = V::Set1(-m);
  F sum = V::Zero();
  for (i = 0; i + W <= n; i += W) {
    const F e = Exp<V>(V::Fma(V::Load(x + i), s, neg_m));
    V::Store(y + i, e);
    sum = V::Add(sum, e);
  }
  if (i < n) {
    // Fill -inf would give exp(NaN) for scale = 0; compute the tail from real data and let
    // StoreN/LoadN keep only the live lanes.
    const F e = Exp<V>(V::Fma(V::LoadN(x + i, n - i, x[i]), s, neg_m));
    V::StoreN(y + i, e, n - i);
    sum = V::Add(sum, V::LoadN(y + i, n - i, 0.0f));
  }
  const F inv = V::Set1(1.0f / V::ReduceAdd(sum));
  MapUnary<V>(y, y, n, [&](F v) { return V::Mul(v, inv); });
}

template <class V>
void SiluRow(const float* x, float* y, int64_t n) {
  MapUnary<V>(x, y, n, [](typename V::F v) { return Silu<V>(v); });
}

template <class V>
void GeluErfRow(const float* x, float* y, int64_t n) {
  MapUnary<V>(x, y, n, [](typename V::F v) { return GeluErf<V>(v); });
}

template <class V>
void GeluTanhRow(const float* x, float* y, int64_t n) {
  MapUnary<V>(x, y, n, [](typename V::F v) { return GeluTanh<V>(v); });
}

template <class V>
void SwiGluRow(const float* g, const float* u, float* y, int64_t n) {
  using F = typename V::F;
  MapBinary<V>(g, u, y, n, [](F gv, F uv) { return V::Mul(Silu<V>(gv), uv); });
}

template <class V>
void AddRow(const float* a, const float* b, float* y, int64_t n) {
  using F = typename V::F;
  MapBinary<V>(a, b, y, n, [](F av, F bv) { return V::Add(av, bv); });
}

template <class V>
void MulRow(const float* a, const float* b, float* y, int64_t n) {
  using F = typename V::F;
  MapBinary<V>(a, b, y, n, [](F av, F bv) { return V::Mul(av, bv); });
}

template <class V>
void ScaleRow(const float* x, float s, float* y, int64_t n) {
  using F = typename V::F;
  const F sv = V::Set1(s);
  MapUnary<V>(x, y, n, [&](F v) { return V::Mul(v, sv); });
}

template <class V>
void RopeHalves(const float* x, int64_t xs, float* y, int64_t ys, int64_t n_head, const float* cos,
                const float* sin, int64_t half) {
  using F = typename V::F;
  constexpr int64_t W = V::kWidth;
  for (int64_t h = 0; h < n_head; ++h) {
    const float* xh = x + h * xs;
    float* yh = y + h * ys;
    for (int64_t i = 0; i < half; i += W) {
      const int64_t k = half - i;
      if (k >= W) {
        const F a = V::Load(xh + i), b = V::Load(xh + i + half);
        const F c = V::Load(cos + i), s = V::Load(sin + i);
        V::Store(yh + i, V::Fma(a, c, V::Mul(V::Sub(V::Zero(), b), s)));
        V::Store(yh + i + half, V::Fma(b, c, V::Mul(a, s)));
      } else {
        const F a = V::LoadN(xh + i, k, 0.0f), b = V::LoadN(xh + i + half, k, 0.0f);
        const F c = V::LoadN(cos + i, k, 0.0f), s = V::LoadN(sin + i, k, 0.0f);
        V::StoreN(yh + i, V::Fma(a, c, V::Mul(V::Sub(V::Zero(), b), s)), k);
        V::StoreN(yh + i + half, V::Fma(b, c, V::Mul(a, s)), k);
      }
    }
  }
}

template <class V>
void RopeInterleaved(const float* x, int64_t xs, float* y, int64_t ys, int64_t n_head,
                     const float* cos2, const float* sin2, int64_t n_rot) {
  using F = typename V::F;
  constexpr int64_t W = V::kWidth;  // even, so a vector never splits a pair
  for (int64_t h = 0; h < n_head; ++h) {
    const float* xh = x + h * xs;
    float* yh = y + h * ys;
    for (int64_t i = 0; i < n_rot; i += W) {
      const int64_t k = n_rot - i;
      if (k >= W) {
        const F v = V::Load(xh + i);
        V::Store(yh + i, V::Fma(v, V::Load(cos2 + i), V::Mul(V::SwapPairs(v), V::Load(sin2 + i))));
      } else {
        const F v = V::LoadN(xh + i, k, 0.0f);
        const F r = V::Fma(v, V::LoadN(cos2 + i, k, 0.0f),
                           V::Mul(V::SwapPairs(v), V::LoadN(sin2 + i, k, 0.0f)));
        V::StoreN(yh + i, r, k);
      }
    }
  }
}

// The kernel table for V.
template <class V>
constexpr EltwiseKernels MakeEltwiseKernels() {
  return EltwiseKernels{
      RmsNormRow<V>, LayerNormRow<V>, SoftmaxRow<V>, SiluRow<V>,  GeluErfRow<V>, GeluTanhRow<V>,
      SwiGluRow<V>,  AddRow<V>,       MulRow<V>,     ScaleRow<V>, RopeHalves<V>, RopeInterleaved<V>,
  };
}

}  // namespace muninn::cpu::simd
