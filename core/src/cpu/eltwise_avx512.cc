// AVX-512 row kernels: eltwise_simd.h instantiated on 16-lane __m512 vectors with mask
// registers for the tails. Compiled with the AVX-512 F/BW/VL/DQ flags; only reached through
// EltwiseKernelsFor(CpuIsa::kAvx512).

// GCC 12's AVX-512 intrinsics build "undefined" pass-through vectors by self-initialisation,
// which -Wmaybe-uninitialized reports at every inlined use (GCC bug 105593); the diagnostic is
// located in the system header, so it has to be silenced before that header is read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "cpu/eltwise_kernels.h"
#include "cpu/eltwise_simd.h"

namespace muninn::cpu {
namespace {

struct Avx512 {
  using F = __m512;
  using M = __mmask16;
  static constexpr int64_t kWidth = 16;

  static __mmask16 Head(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }  // n < 16
  static F Zero() { return _mm512_setzero_ps(); }
  static F Set1(float v) { return _mm512_set1_ps(v); }
  static F Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F LoadN(const float* p, int64_t n, float fill) {
    return _mm512_mask_loadu_ps(Set1(fill), Head(n), p);
  }
  static void StoreN(float* p, F v, int64_t n) { _mm512_mask_storeu_ps(p, Head(n), v); }
  static F Add(F a, F b) { return _mm512_add_ps(a, b); }
  static F Sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F Mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F Div(F a, F b) { return _mm512_div_ps(a, b); }
  static F Fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F Max(F a, F b) { return _mm512_max_ps(a, b); }
  static F Min(F a, F b) { return _mm512_min_ps(a, b); }
  static F Round(F v) {
    return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static F Pow2i(F k) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
  static M Less(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static F Select(M m, F if_true, F if_false) { return _mm512_mask_blend_ps(m, if_false, if_true); }
  static F SwapPairs(F v) { return _mm512_permute_ps(v, 0xB1); }
  static float ReduceAdd(F v) { return _mm512_reduce_add_ps(v); }
  static float ReduceMax(F v) { return _mm512_reduce_max_ps(v); }
};

constexpr EltwiseKernels kAvx512Kernels = simd::MakeEltwiseKernels<Avx512>();

}  // namespace

const EltwiseKernels& Avx512EltwiseKernels() { return kAvx512Kernels; }

}  // namespace muninn::cpu
