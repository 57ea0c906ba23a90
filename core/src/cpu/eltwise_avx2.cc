// AVX2/FMA row kernels: eltwise_simd.h instantiated on 8-lane __m256 vectors. Compiled with
// -mavx2 -mfma; only reached through EltwiseKernelsFor(CpuIsa::kAvx2 or better).
#include <immintrin.h>

#include "cpu/eltwise_kernels.h"
#include "cpu/eltwise_simd.h"

namespace muninn::cpu {
namespace {

struct Avx2 {
  using F = __m256;
  using M = __m256;
  static constexpr int64_t kWidth = 8;

  // All-ones in the first n lanes (0 <= n < 8).
  static __m256i Head(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static F Zero() { return _mm256_setzero_ps(); }
  static F Set1(float v) { return _mm256_set1_ps(v); }
  static F Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F LoadN(const float* p, int64_t n, float fill) {
    const __m256i m = Head(n);
    return _mm256_blendv_ps(Set1(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
  }
  static void StoreN(float* p, F v, int64_t n) { _mm256_maskstore_ps(p, Head(n), v); }
  static F Add(F a, F b) { return _mm256_add_ps(a, b); }
  static F Sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F Mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F Div(F a, F b) { return _mm256_div_ps(a, b); }
  static F Fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F Max(F a, F b) { return _mm256_max_ps(a, b); }
  static F Min(F a, F b) { return _mm256_min_ps(a, b); }
  static F Round(F v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static F Pow2i(F k) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  static M Less(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static F Select(M m, F if_true, F if_false) { return _mm256_blendv_ps(if_false, if_true, m); }
  static F SwapPairs(F v) { return _mm256_permute_ps(v, 0xB1); }
  static float ReduceAdd(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float ReduceMax(F v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

constexpr EltwiseKernels kAvx2Kernels = simd::MakeEltwiseKernels<Avx2>();

}  // namespace

const EltwiseKernels& Avx2EltwiseKernels() { return kAvx2Kernels; }

}  // namespace muninn::cpu
