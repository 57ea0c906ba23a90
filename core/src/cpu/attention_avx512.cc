// AVX-512 instantiation of the tiled attention kernel (attention_kernel.h). Compiled with
// -mavx512f/bw/vl/dq -mfma -mf16c; only called when CpuFeatures says the CPU has them.

// GCC 12's AVX-512 intrinsics self-initialise their "undefined" pass-through vectors, which
// -Wmaybe-uninitialized reports inside the system header at every inlined use (GCC bug 105593),
// so the diagnostic is silenced for this file before the header is read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu/attention_kernel.h"

namespace muninn::cpu::attn {
namespace {

struct Avx512Isa {
  using V = __m512;
  static constexpr int kW = 16;
  static constexpr int kMaxRb = 4;  // 4 keys x 4 row vectors = 16 accumulators of 32 registers
  static constexpr int kMaxNv = 4;
  static V Zero() { return _mm512_setzero_ps(); }
  static V Set1(float x) { return _mm512_set1_ps(x); }
  static V Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V Mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V Add(V a, V b) { return _mm512_add_ps(a, b); }
  static V Sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V Max(V a, V b) { return _mm512_max_ps(a, b); }
  static float ReduceAdd(V v) { return _mm512_reduce_add_ps(v); }
  static constexpr int kScoreKeys = 4;
  // out[k] = sum of a[k]'s 16 lanes, k < 4: pairs of vectors fold their 256-bit halves together,
  // then their 128-bit quarters, leaving [a0 | a1 | a2 | a3] as four 4-lane groups; two in-lane
  // shuffles finish each group, and lane 0 of each group is gathered.
  static void ReduceAdd4(const V* a, float* out) {
    const V b0 = _mm512_add_ps(_mm512_shuffle_f32x4(a[0], a[1], 0x44),   // a0.q0 a0.q1 a1.q0 a1.q1
                               _mm512_shuffle_f32x4(a[0], a[1], 0xEE));  // a0.q2 a0.q3 a1.q2 a1.q3
    const V b1 = _mm512_add_ps(_mm512_shuffle_f32x4(a[2], a[3], 0x44),
                               _mm512_shuffle_f32x4(a[2], a[3], 0xEE));
    // b0 = [a0 x2 quarters | a1 x2]; fold the quarter pairs: [a0 | a1 | a2 | a3].
    V c = _mm512_add_ps(_mm512_shuffle_f32x4(b0, b1, 0x88),   // b0.q0 b0.q2 b1.q0 b1.q2
                        _mm512_shuffle_f32x4(b0, b1, 0xDD));  // b0.q1 b0.q3 b1.q1 b1.q3
    c = _mm512_add_ps(c, _mm512_shuffle_ps(c, c, 0x4E));      // x0+x2 x1+x3 (per 128-bit lane)
    c = _mm512_add_ps(c, _mm512_shuffle_ps(c, c, 0xB1));      // lane 0 of each group: its sum
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_permutexvar_ps(idx, c)));
  }
  static V ZeroIfNegInf(V x) {
    const __mmask16 ninf = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-__builtin_inff()), _CMP_EQ_OQ);
    return _mm512_mask_mov_ps(x, ninf, _mm512_setzero_ps());
  }
  // e^x for x <= 0: x = n ln2 + r with |r| <= ln2/2, e^r by its degree-7 Taylor polynomial
  // (truncation error < 6e-9), scaled by 2^n. Arguments below -87 (including -inf) give exactly 0;
  // they only ever multiply values that are negligible next to the row's largest term, e^0 = 1.
  static V Exp(V x) {
    const V lo = _mm512_set1_ps(-87.0f);
    const __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ);
    x = _mm512_max_ps(x, lo);
    const V n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    V r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    V p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(p, n));
  }
  static V LoadF16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static V LoadF16Partial(const uint16_t* p, int count) {
    const __mmask16 m = static_cast<__mmask16>((1u << count) - 1u);
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
  }
  static V Set1F16(uint16_t h) { return _mm512_set1_ps(_cvtsh_ss(h)); }
  static V LoadI8(const int8_t* p) {
    return _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
};

}  // namespace

void AttendTileAvx512(const QueryBlock& qb, const KeyTile& tile, const TileScratch& sc,
                      const RunState& st) {
  AttendTile<Avx512Isa>(qb, tile, sc, st);
}

}  // namespace muninn::cpu::attn
