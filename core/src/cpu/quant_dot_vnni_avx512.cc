// AVX-512 VNNI dot kernels for the block formats decode spends its time in: q4_0 / q4_1 (the
// layers of the common 4-bit GGUFs) and q8_0 (embedding/output heads), two blocks per register.
// Against quant_dot_avx512.cc they use vpdpbusd for the integer block sums (one instruction for
// maddubs + madd) and compute the per-block scales in vector registers: the f16 pairs (d, m) of
// two weight blocks and (d, s) of two activation blocks are converted together and multiplied
// once, giving both the two dot scales and the two q4_1 offset terms. Same integer sums and the
// same float products as the scalar reference; only the float accumulation order differs.
// Called only when the CPU has AVX-512 F/BW/VL/DQ and VNNI.
// GCC 12 false positives on the intrinsic headers: see quant_dot_avx512.cc.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#if !defined(__clang__)
#pragma GCC target("avx512vnni")
#endif
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "cpu/quant_dot.h"
#include "muninn/core/quant.h"

// VNNI for this file only (the other _avx512.cc files must run on AVX-512 CPUs without it).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512vnni"))), apply_to = function)
#endif

namespace muninn::cpu {
namespace {

inline int32_t LoadI32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline int32_t LoadU16(const void* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

inline __m256i Load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

inline __m512i Join(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// The 32 nibbles of a q4 block as bytes: low nibbles (elements 0..15), then high (16..31).
inline __m256i Nibbles(const uint8_t* qs) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F));
}

// Two f16 fields (4 bytes) of blocks a and b as floats [a0, a1, b0, b1].
inline __m128 HalfPairs(const void* a, const void* b) {
  return _mm_cvtph_ps(_mm_setr_epi32(LoadI32(a), LoadI32(b), 0, 0));
}

// Lanes 0..7 = s[0], lanes 8..15 = s[2]: the scales of two blocks, for int32 sums whose low and
// high halves belong to the two blocks.
inline __m512 SpreadScales(__m128 s) {
  const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
  return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(s));
}

inline float Hsum128(__m128 v) {
  v = _mm_add_ps(v, _mm_movehl_ps(v, v));
  return _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
}

template <bool kHasMin>
float DotQ4(int64_t n, const void* vw, const void* vx) {
  using WBlock = std::conditional_t<kHasMin, BlockQ4_1, BlockQ4_0>;
  using XBlock = std::conditional_t<kHasMin, BlockQ8_1, BlockQ8_0>;
  const auto* w = static_cast<const WBlock*>(vw);
  const auto* x = static_cast<const XBlock*>(vx);
  const int64_t nb = n / kQK;
  __m512 acc = _mm512_setzero_ps();
  __m128 mins = _mm_setzero_ps();  // lanes 1 and 3: m_w * s_x of each block pair (q4_1)
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    __m512i q = Join(Nibbles(w[i].qs), Nibbles(w[i + 1].qs));
    if constexpr (!kHasMin) q = _mm512_sub_epi8(q, _mm512_set1_epi8(8));
    const __m512i xq = Join(Load256(x[i].qs), Load256(x[i + 1].qs));
    __m512i p;
    if constexpr (kHasMin) {
      p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, xq);
    } else {
      // Signed weights: |q| times x with q's sign moved onto x (x never holds -128).
      const __mmask64 neg = _mm512_movepi8_mask(q);
      p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(q),
                              _mm512_mask_sub_epi8(xq, neg, _mm512_setzero_si512(), xq));
    }
    __m128 s;  // [d_w d_x, m_w s_x] for blocks i and i + 1
    if constexpr (kHasMin) {
      s = _mm_mul_ps(HalfPairs(&w[i], &w[i + 1]), HalfPairs(&x[i], &x[i + 1]));
      mins = _mm_add_ps(mins, s);
    } else {
      const __m128i dw = _mm_setr_epi32(LoadU16(&w[i].d), LoadU16(&w[i + 1].d), 0, 0);
      const __m128i dx = _mm_setr_epi32(LoadU16(&x[i].d), LoadU16(&x[i + 1].d), 0, 0);
      // [d_w d_x (i), 0, d_w d_x (i+1), 0]: the zero-extended halves convert to (d, 0) pairs
      s = _mm_mul_ps(_mm_cvtph_ps(dw), _mm_cvtph_ps(dx));
    }
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), SpreadScales(s), acc);
  }
  float sum = _mm512_reduce_add_ps(acc);
  if constexpr (kHasMin) {
    sum += _mm_cvtss_f32(_mm_shuffle_ps(mins, mins, 1)) + _mm_cvtss_f32(_mm_shuffle_ps(mins, mins, 3));
  }
  if (i < nb) {  // odd block count: the last block on 256 bits
    __m256i q = Nibbles(w[i].qs);
    if constexpr (!kHasMin) q = _mm256_sub_epi8(q, _mm256_set1_epi8(8));
    const __m256i xq = Load256(x[i].qs);
    const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(q, q),
                                          _mm256_sign_epi8(xq, q));
    const __m128 t = _mm_cvtepi32_ps(
        _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1)));
    if constexpr (kHasMin) {
      const __m128 s = _mm_mul_ps(HalfPairs(&w[i], &w[i]), HalfPairs(&x[i], &x[i]));
      sum += Hsum128(t) * _mm_cvtss_f32(s) + _mm_cvtss_f32(_mm_shuffle_ps(s, s, 1));
    } else {
      const __m128 d =
          _mm_cvtph_ps(_mm_setr_epi32(LoadU16(&w[i].d) | (LoadU16(&x[i].d) << 16), 0, 0, 0));
      sum += Hsum128(t) * (_mm_cvtss_f32(d) * _mm_cvtss_f32(_mm_shuffle_ps(d, d, 1)));
    }
  }
  return sum;
}

float DotQ8_0(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ8_0*>(vw);
  const auto* x = static_cast<const BlockQ8_0*>(vx);
  const int64_t nb = n / kQK;
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    // Software prefetch: consecutive rows of w are contiguous, so this runs into the next row
    // (the output head streams 49152 such rows per decode step).
    _mm_prefetch(reinterpret_cast<const char*>(&w[i]) + 2048, _MM_HINT_T0);
    const __m512i a = Join(Load256(w[i].qs), Load256(w[i + 1].qs));
    const __m512i b = Join(Load256(x[i].qs), Load256(x[i + 1].qs));
    const __mmask64 neg = _mm512_movepi8_mask(a);
    const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(a),
                                          _mm512_mask_sub_epi8(b, neg, _mm512_setzero_si512(), b));
    const __m128i dw = _mm_setr_epi32(LoadU16(&w[i].d), LoadU16(&w[i + 1].d), 0, 0);
    const __m128i dx = _mm_setr_epi32(LoadU16(&x[i].d), LoadU16(&x[i + 1].d), 0, 0);
    const __m128 s = _mm_mul_ps(_mm_cvtph_ps(dw), _mm_cvtph_ps(dx));  // [s_i, 0, s_i+1, 0]
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), SpreadScales(s), acc);
  }
  float sum = _mm512_reduce_add_ps(acc);
  if (i < nb) {
    const __m256i a = Load256(w[i].qs), b = Load256(x[i].qs);
    const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(a, a),
                                          _mm256_sign_epi8(b, a));
    const __m128 t = _mm_cvtepi32_ps(
        _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1)));
    const __m128 d = _mm_cvtph_ps(_mm_setr_epi32(LoadU16(&w[i].d) | (LoadU16(&x[i].d) << 16), 0, 0, 0));
    sum += Hsum128(t) * (_mm_cvtss_f32(d) * _mm_cvtss_f32(_mm_shuffle_ps(d, d, 1)));
  }
  return sum;
}

}  // namespace

VecDotFn Avx512VnniVecDot(DType weight) {
  switch (weight) {
    case DType::kQ4_0:
      return DotQ4<false>;
    case DType::kQ4_1:
      return DotQ4<true>;
    case DType::kQ8_0:
      return DotQ8_0;
    default:
      return nullptr;
  }
}

}  // namespace muninn::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif
