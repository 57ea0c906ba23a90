// AVX-512 (F/BW/VL/DQ) dot kernels: the plain float formats (16 lanes per instruction) and the
// q4_0/q4_1/q8_0 block formats (two blocks per register). The other block formats use the AVX2
// kernels on AVX-512 machines. First measurements (on a loaded 2-core Zen 4 VM) put the block
// kernels level with AVX2, not ahead; bench/core/quant_bench.cc (BM_MatVec isa:1 vs isa:2) is the
// check to re-run before keeping them. Called only when the CPU supports AVX-512.
// GCC 12 reports its own _mm512_undefined_*() placeholders (the pass-through operand of many
// AVX-512 intrinsics) as uninitialized once they are inlined here; that is a false positive
// (GCC bug 105593), so these two warnings are off for the intrinsic headers included below.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "cpu/quant_dot.h"
#include "muninn/core/fp16.h"
#include "muninn/core/quant.h"

namespace muninn::cpu {
namespace {

inline float F16(uint16_t h) { return _cvtsh_ss(h); }

inline __m256i Load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

inline __m512i Join(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// Lanes 0..7 = a, lanes 8..15 = b: the per-block scales of two blocks whose int32 partial sums
// sit in the low and high halves of a register.
inline __m512 TwoScales(float a, float b) {
  return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(a)), _mm256_set1_ps(b), 1);
}

inline __m256i UnpackNibbles16(const uint8_t* qs) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F));
}

inline __m512i DotU8I8(__m512i u, __m512i s) {
  return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
}

// Signed x signed: |a| times b with a's sign moved onto b. b must not hold -128.
inline __m512i DotI8I8(__m512i a, __m512i b) {
  const __mmask64 neg = _mm512_movepi8_mask(a);
  return DotU8I8(_mm512_abs_epi8(a), _mm512_mask_sub_epi8(b, neg, _mm512_setzero_si512(), b));
}

inline float Hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

float DotQ4_0(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ4_0*>(vw);
  const auto* x = static_cast<const BlockQ8_0*>(vx);
  const int64_t nb = n / kQK;
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    const __m512i q = _mm512_sub_epi8(Join(UnpackNibbles16(w[i].qs), UnpackNibbles16(w[i + 1].qs)),
                                      _mm512_set1_epi8(8));
    const __m512i p = DotI8I8(q, Join(Load256(x[i].qs), Load256(x[i + 1].qs)));
    const __m512 s = TwoScales(F16(w[i].d) * F16(x[i].d), F16(w[i + 1].d) * F16(x[i + 1].d));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc);
  }
  float sum = _mm512_reduce_add_ps(acc);
  if (i < nb) {  // odd block count: the last block on 256 bits
    const __m256i q = _mm256_sub_epi8(UnpackNibbles16(w[i].qs), _mm256_set1_epi8(8));
    const __m256i xq = Load256(x[i].qs);
    const __m256i p =
        _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xq, q)),
                          _mm256_set1_epi16(1));
    sum += Hsum256(_mm256_cvtepi32_ps(p)) * (F16(w[i].d) * F16(x[i].d));
  }
  return sum;
}

float DotQ4_1(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ4_1*>(vw);
  const auto* x = static_cast<const BlockQ8_1*>(vx);
  const int64_t nb = n / kQK;
  __m512 acc = _mm512_setzero_ps();
  float mins = 0.0f;
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    const __m512i q = Join(UnpackNibbles16(w[i].qs), UnpackNibbles16(w[i + 1].qs));
    const __m512i p = DotU8I8(q, Join(Load256(x[i].qs), Load256(x[i + 1].qs)));
    const __m512 s = TwoScales(F16(w[i].d) * F16(x[i].d), F16(w[i + 1].d) * F16(x[i + 1].d));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc);
    mins += F16(w[i].m) * F16(x[i].s) + F16(w[i + 1].m) * F16(x[i + 1].s);
  }
  float sum = _mm512_reduce_add_ps(acc) + mins;
  if (i < nb) {
    const __m256i p = _mm256_madd_epi16(
        _mm256_maddubs_epi16(UnpackNibbles16(w[i].qs), Load256(x[i].qs)), _mm256_set1_epi16(1));
    sum += Hsum256(_mm256_cvtepi32_ps(p)) * (F16(w[i].d) * F16(x[i].d)) + F16(w[i].m) * F16(x[i].s);
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
    const __m512i p = DotI8I8(Join(Load256(w[i].qs), Load256(w[i + 1].qs)),
                              Join(Load256(x[i].qs), Load256(x[i + 1].qs)));
    const __m512 s = TwoScales(F16(w[i].d) * F16(x[i].d), F16(w[i + 1].d) * F16(x[i + 1].d));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc);
  }
  float sum = _mm512_reduce_add_ps(acc);
  if (i < nb) {
    const __m256i a = Load256(w[i].qs), b = Load256(x[i].qs);
    const __m256i p = _mm256_madd_epi16(
        _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a)), _mm256_set1_epi16(1));
    sum += Hsum256(_mm256_cvtepi32_ps(p)) * (F16(w[i].d) * F16(x[i].d));
  }
  return sum;
}

float DotF32(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const float*>(vw);
  const auto* x = static_cast<const float*>(vx);
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
  }
  if (i < n) {  // masked tail: up to 31 elements
    const int64_t r = n - i;
    const __mmask16 m0 = static_cast<__mmask16>(r >= 16 ? 0xFFFF : (1u << r) - 1);
    a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, w + i), _mm512_maskz_loadu_ps(m0, x + i), a0);
    if (r > 16) {
      const __mmask16 m1 = static_cast<__mmask16>((1u << (r - 16)) - 1);
      a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, w + i + 16),
                           _mm512_maskz_loadu_ps(m1, x + i + 16), a1);
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

inline __m512 LoadF16x16(__mmask16 m, const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

inline __m512 LoadBF16x16(__mmask16 m, const uint16_t* p) {
  const __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

template <__m512 (*Load)(__mmask16, const uint16_t*)>
float DotHalf(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const uint16_t*>(vw);
  const auto* x = static_cast<const float*>(vx);
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm512_fmadd_ps(Load(0xFFFF, w + i), _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(Load(0xFFFF, w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
  }
  for (; i < n; i += 16) {
    const int64_t r = n - i;
    const __mmask16 m = static_cast<__mmask16>(r >= 16 ? 0xFFFF : (1u << r) - 1);
    a0 = _mm512_fmadd_ps(Load(m, w + i), _mm512_maskz_loadu_ps(m, x + i), a0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

}  // namespace

VecDotFn Avx512VecDot(DType weight) {
  switch (weight) {
    case DType::kF32:
      return DotF32;
    case DType::kF16:
      return DotHalf<LoadF16x16>;
    case DType::kBF16:
      return DotHalf<LoadBF16x16>;
    case DType::kQ4_0:
      return DotQ4_0;
    case DType::kQ4_1:
      return DotQ4_1;
    case DType::kQ8_0:
      return DotQ8_0;
    default:
      return nullptr;
  }
}

}  // namespace muninn::cpu
