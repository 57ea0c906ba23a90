// AVX2/FMA/F16C dot kernels (compiled with those flags; called only when the CPU has them).
// Integer block products use the unsigned x signed byte multiply (vpmaddubsw): weight codes are
// made non-negative (or their sign is moved onto the activation), pairs are summed to int16 and
// then to int32 (vpmaddwd), and each block adds one float multiply-add to the accumulator.
#include <immintrin.h>

#include <cstring>

#include "cpu/quant_dot.h"
#include "muninn/core/fp16.h"
#include "muninn/core/quant.h"

namespace muninn::cpu {
namespace {

inline float Hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float F16(uint16_t h) { return _cvtsh_ss(h); }

inline __m256i Load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// 16 bytes of packed nibbles -> 32 bytes: low nibbles in bytes 0..15, high nibbles in 16..31
// (the element order of the q4_0/q4_1/q5_* blocks).
inline __m256i UnpackNibbles16(const uint8_t* qs) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F));
}

// Byte i is 0xFF when bit i of `bits` is set, else 0.
inline __m256i BitsToBytes(uint32_t bits) {
  const __m256i spread =
      _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)),
                          _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                             0x0202020202020202, 0x0303030303030303));
  const __m256i mask = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ull));
  return _mm256_cmpeq_epi8(_mm256_and_si256(spread, mask), mask);
}

// 8 int32 partial sums of u[i] * s[i]; u in [0, 127] (or 128 after a sign move), s signed.
inline __m256i DotU8I8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// 8 int32 partial sums of a[i] * b[i] for signed bytes; b must not hold -128.
inline __m256i DotI8I8(__m256i a, __m256i b) {
  return DotU8I8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
}

inline uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

float DotQ4_0(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ4_0*>(vw);
  const auto* x = static_cast<const BlockQ8_0*>(vx);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK; ++i) {
    const __m256i q = _mm256_sub_epi8(UnpackNibbles16(w[i].qs), _mm256_set1_epi8(8));
    const __m256i p = DotI8I8(q, Load256(x[i].qs));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(F16(w[i].d) * F16(x[i].d)), acc);
  }
  return Hsum(acc);
}

float DotQ4_1(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ4_1*>(vw);
  const auto* x = static_cast<const BlockQ8_1*>(vx);
  __m256 acc = _mm256_setzero_ps();
  float mins = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    const __m256i p = DotU8I8(UnpackNibbles16(w[i].qs), Load256(x[i].qs));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(F16(w[i].d) * F16(x[i].d)), acc);
    mins += F16(w[i].m) * F16(x[i].s);
  }
  return Hsum(acc) + mins;
}

float DotQ5_0(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ5_0*>(vw);
  const auto* x = static_cast<const BlockQ8_0*>(vx);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK; ++i) {
    const __m256i hi = _mm256_and_si256(BitsToBytes(LoadU32(w[i].qh)), _mm256_set1_epi8(0x10));
    const __m256i q =
        _mm256_sub_epi8(_mm256_or_si256(UnpackNibbles16(w[i].qs), hi), _mm256_set1_epi8(16));
    const __m256i p = DotI8I8(q, Load256(x[i].qs));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(F16(w[i].d) * F16(x[i].d)), acc);
  }
  return Hsum(acc);
}

float DotQ5_1(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ5_1*>(vw);
  const auto* x = static_cast<const BlockQ8_1*>(vx);
  __m256 acc = _mm256_setzero_ps();
  float mins = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    const __m256i hi = _mm256_and_si256(BitsToBytes(LoadU32(w[i].qh)), _mm256_set1_epi8(0x10));
    const __m256i q = _mm256_or_si256(UnpackNibbles16(w[i].qs), hi);
    const __m256i p = DotU8I8(q, Load256(x[i].qs));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(F16(w[i].d) * F16(x[i].d)), acc);
    mins += F16(w[i].m) * F16(x[i].s);
  }
  return Hsum(acc) + mins;
}

float DotQ8_0(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ8_0*>(vw);
  const auto* x = static_cast<const BlockQ8_0*>(vx);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK; ++i) {
    const __m256i p = DotI8I8(Load256(w[i].qs), Load256(x[i].qs));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(F16(w[i].d) * F16(x[i].d)), acc);
  }
  return Hsum(acc);
}

// sum_j mn[j] * (sum of the 32 activation codes of sub-block j), from the q8_K 16-element sums.
inline int MinsTerm(const uint8_t* mn, const BlockQ8_K& x) {
  const __m256i bs = Load256(x.bsums);  // 16 x int16
  // Pair each 16-element sum with the min of its sub-block: mins repeated twice, as int16.
  const __m128i m8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(mn));
  const __m256i m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
  const __m256i prod = _mm256_madd_epi16(bs, m16);  // 8 x int32
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(prod), _mm256_extracti128_si256(prod, 1));
  s = _mm_hadd_epi32(s, s);
  s = _mm_hadd_epi32(s, s);
  return _mm_cvtsi128_si32(s);
}

inline void UnpackScalesK4(const uint8_t* scales, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 8; ++j) UnpackScaleMinK4(scales, j, &sc[j], &mn[j]);
}

float DotQ4_K(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ4_K*>(vw);
  const auto* x = static_cast<const BlockQ8_K*>(vx);
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 acc = _mm256_setzero_ps();
  float mins = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    alignas(8) uint8_t sc[8], mn[8];
    UnpackScalesK4(w[i].scales, sc, mn);
    __m256i sumi = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i q = Load256(w[i].qs + 32 * c);
      const __m256i lo = _mm256_and_si256(q, low4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
      const __m256i plo = _mm256_maddubs_epi16(lo, Load256(x[i].qs + 64 * c));
      const __m256i phi = _mm256_maddubs_epi16(hi, Load256(x[i].qs + 64 * c + 32));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(plo, _mm256_set1_epi16(sc[2 * c])));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(phi, _mm256_set1_epi16(sc[2 * c + 1])));
    }
    const float d = F16(w[i].d) * x[i].d;
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(d), acc);
    mins += F16(w[i].dmin) * x[i].d * static_cast<float>(MinsTerm(mn, x[i]));
  }
  return Hsum(acc) - mins;
}

float DotQ5_K(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ5_K*>(vw);
  const auto* x = static_cast<const BlockQ8_K*>(vx);
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i bit4 = _mm256_set1_epi8(0x10);
  __m256 acc = _mm256_setzero_ps();
  float mins = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    alignas(8) uint8_t sc[8], mn[8];
    UnpackScalesK4(w[i].scales, sc, mn);
    const __m256i qh = Load256(w[i].qh);
    __m256i sumi = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i q = Load256(w[i].qs + 32 * c);
      const __m256i mlo = _mm256_set1_epi8(static_cast<char>(1 << (2 * c)));
      const __m256i mhi = _mm256_set1_epi8(static_cast<char>(1 << (2 * c + 1)));
      const __m256i hlo = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, mlo), mlo), bit4);
      const __m256i hhi = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, mhi), mhi), bit4);
      const __m256i lo = _mm256_or_si256(_mm256_and_si256(q, low4), hlo);
      const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), low4), hhi);
      const __m256i plo = _mm256_maddubs_epi16(lo, Load256(x[i].qs + 64 * c));
      const __m256i phi = _mm256_maddubs_epi16(hi, Load256(x[i].qs + 64 * c + 32));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(plo, _mm256_set1_epi16(sc[2 * c])));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(phi, _mm256_set1_epi16(sc[2 * c + 1])));
    }
    const float d = F16(w[i].d) * x[i].d;
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(d), acc);
    mins += F16(w[i].dmin) * x[i].d * static_cast<float>(MinsTerm(mn, x[i]));
  }
  return Hsum(acc) - mins;
}

float DotQ6_K(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ6_K*>(vw);
  const auto* x = static_cast<const BlockQ8_K*>(vx);
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i top2 = _mm256_set1_epi8(0x30);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    // Codes are used unsigned (0..63); the -32 offset is taken out once per block through the
    // activation group sums: sum sc_g * (q - 32) x = sum sc_g q x - 32 sum sc_g bsum_g.
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[i].scales));
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);  // 16 x int16
    const __m256i offs = _mm256_madd_epi16(sc16, Load256(x[i].bsums));
    __m256i sumi = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = Load256(w[i].ql + 64 * h);
      const __m256i ql1 = Load256(w[i].ql + 64 * h + 32);
      const __m256i qh = Load256(w[i].qh + 32 * h);
      const __m256i q[4] = {
          _mm256_or_si256(_mm256_and_si256(ql0, low4),
                          _mm256_and_si256(_mm256_slli_epi16(qh, 4), top2)),
          _mm256_or_si256(_mm256_and_si256(ql1, low4),
                          _mm256_and_si256(_mm256_slli_epi16(qh, 2), top2)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                          _mm256_and_si256(qh, top2)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                          _mm256_and_si256(_mm256_srli_epi16(qh, 2), top2)),
      };
      for (int k = 0; k < 4; ++k) {
        const __m256i p = _mm256_maddubs_epi16(q[k], Load256(x[i].qs + 128 * h + 32 * k));
        const int g = 8 * h + 2 * k;
        const __m256i s =
            _mm256_set_m128i(_mm_set1_epi16(w[i].scales[g + 1]), _mm_set1_epi16(w[i].scales[g]));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
      }
    }
    sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(offs, 5));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(F16(w[i].d) * x[i].d), acc);
  }
  return Hsum(acc);
}

float DotF32(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const float*>(vw);
  const auto* x = static_cast<const float*>(vx);
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
  }
  float sum = Hsum(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) sum += w[i] * x[i];
  return sum;
}

inline __m256 LoadF16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

inline __m256 LoadBF16x8(const uint16_t* p) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

float DotF16(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const uint16_t*>(vw);
  const auto* x = static_cast<const float*>(vx);
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(LoadF16x8(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(LoadF16x8(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
  }
  float sum = Hsum(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) sum += Fp16ToFp32(w[i]) * x[i];
  return sum;
}

float DotBF16(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const uint16_t*>(vw);
  const auto* x = static_cast<const float*>(vx);
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(LoadBF16x8(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(LoadBF16x8(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
  }
  float sum = Hsum(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) sum += Bf16ToFp32(w[i]) * x[i];
  return sum;
}

}  // namespace

void Avx2HalfToF32(DType dtype, const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  if (dtype == DType::kF16) {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, LoadF16x8(src + i));
    for (; i < n; ++i) dst[i] = Fp16ToFp32(src[i]);
  } else {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, LoadBF16x8(src + i));
    for (; i < n; ++i) dst[i] = Bf16ToFp32(src[i]);
  }
}

VecDotFn Avx2VecDot(DType weight) {
  switch (weight) {
    case DType::kF32:
      return DotF32;
    case DType::kF16:
      return DotF16;
    case DType::kBF16:
      return DotBF16;
    case DType::kQ4_0:
      return DotQ4_0;
    case DType::kQ4_1:
      return DotQ4_1;
    case DType::kQ5_0:
      return DotQ5_0;
    case DType::kQ5_1:
      return DotQ5_1;
    case DType::kQ8_0:
      return DotQ8_0;
    case DType::kQ4_K:
      return DotQ4_K;
    case DType::kQ5_K:
      return DotQ5_K;
    case DType::kQ6_K:
      return DotQ6_K;
    default:
      return nullptr;
  }
}

}  // namespace muninn::cpu
