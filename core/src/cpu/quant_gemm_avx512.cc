// VNNI GEMM kernels for batched MatMul with q4_0/q4_1/q5_0/q5_1/q8_0 weights (layout and
// arithmetic: quant_gemm.h). Compiled with the AVX-512 flags plus VNNI; called only when the CPU
// has both.
// GCC 12 reports its own _mm512_undefined_*() placeholders as uninitialized once inlined (GCC bug
// 105593); see quant_dot_avx512.cc.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#if !defined(__clang__)
#pragma GCC target("avx512vnni")
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "cpu/quant_gemm.h"
#include "muninn/core/check.h"
#include "muninn/core/fp16.h"
#include "muninn/core/quant.h"

// VNNI for this file only (the other _avx512.cc files must run on AVX-512 CPUs without it).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512vnni"))), apply_to = function)
#endif

namespace muninn::cpu {
namespace {

constexpr int64_t kAlign = 64;

void* AlignedZeroed(size_t bytes) {
  bytes = (bytes + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, std::max<size_t>(bytes, kAlign));
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return p;
}

inline float F16(uint16_t h) { return _cvtsh_ss(h); }

// ---- weight unpacking: one row into (u [k_pad] bytes, d16 [n_pairs, 16], m [n_blk16]) ----

// Spreads the per-block scales of block pairs over 16 lanes: lanes 0..7 block 2p, 8..15 2p+1.
inline void SpreadScale(float* d16, int64_t b, float d) {
  float* dst = d16 + (b / 2) * 16 + (b % 2) * 8;
  for (int i = 0; i < 8; ++i) dst[i] = d;
}

// The 32 values of a q4 block (qs: 16 bytes, low nibbles first) as bytes.
inline __m256i Nibbles(const uint8_t* qs) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0F);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(t, 4), mask), _mm_and_si128(t, mask));
}

inline uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

void UnpackRow(DType dtype, const char* src, int64_t nb, uint8_t* u, float* d16, float* m) {
  switch (dtype) {
    case DType::kQ4_0:
    case DType::kQ4_1: {
      const bool has_min = dtype == DType::kQ4_1;
      const size_t bytes = has_min ? sizeof(BlockQ4_1) : sizeof(BlockQ4_0);
      for (int64_t b = 0; b < nb; ++b) {
        const char* blk = src + b * static_cast<int64_t>(bytes);
        uint16_t dh, mh = 0;
        std::memcpy(&dh, blk, 2);
        if (has_min) std::memcpy(&mh, blk + 2, 2);
        const auto* qs = reinterpret_cast<const uint8_t*>(blk + (has_min ? 4 : 2));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(u + b * kQK), Nibbles(qs));
        const float d = F16(dh);
        SpreadScale(d16, b, d);
        m[b] = has_min ? F16(mh) : -8.0f * d;
      }
      return;
    }
    case DType::kQ5_0:
    case DType::kQ5_1: {
      const bool has_min = dtype == DType::kQ5_1;
      const size_t bytes = has_min ? sizeof(BlockQ5_1) : sizeof(BlockQ5_0);
      for (int64_t b = 0; b < nb; ++b) {
        const char* blk = src + b * static_cast<int64_t>(bytes);
        uint16_t dh, mh = 0;
        std::memcpy(&dh, blk, 2);
        if (has_min) std::memcpy(&mh, blk + 2, 2);
        const auto* qh = reinterpret_cast<const uint8_t*>(blk + (has_min ? 4 : 2));
        const __m256i high = _mm256_maskz_mov_epi8(LoadU32(qh), _mm256_set1_epi8(0x10));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(u + b * kQK),
                            _mm256_or_si256(Nibbles(qh + 4), high));
        const float d = F16(dh);
        SpreadScale(d16, b, d);
        m[b] = has_min ? F16(mh) : -16.0f * d;
      }
      return;
    }
    case DType::kQ8_0: {
      for (int64_t b = 0; b < nb; ++b) {
        const char* blk = src + b * static_cast<int64_t>(sizeof(BlockQ8_0));
        uint16_t dh;
        std::memcpy(&dh, blk, 2);
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(u + b * kQK),
                            _mm256_xor_si256(q, _mm256_set1_epi8(static_cast<char>(0x80))));
        const float d = F16(dh);
        SpreadScale(d16, b, d);
        m[b] = -128.0f * d;
      }
      return;
    }
    default:
      MUNINN_CHECK(false) << "VnniGemm: unsupported weight dtype " << DTypeName(dtype);
  }
}

// std::roundf (half away from zero) on 16 lanes, as int32: truncate, then step away from zero
// when the dropped fraction is at least one half (x - trunc(x) is exact).
inline __m512i RoundAway(__m512 x) {
  const __m512 t = _mm512_roundscale_ps(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(x, t)),
                                          _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512 one = _mm512_or_ps(_mm512_set1_ps(1.0f),
                                  _mm512_and_ps(x, _mm512_set1_ps(-0.0f)));  // copysign(1, x)
  return _mm512_cvtps_epi32(_mm512_mask_add_ps(t, up, t, one));
}

// One 32-block of activations as q8_0, as QuantizeRow makes it: d = amax / 127 rounded to f16
// (returned in *d as f32), q = round(x / d) with the reciprocal of the unrounded d (see
// core/src/quant.cc).
inline void QuantBlockQ8(const float* x, bool q8_1_sum, int8_t* q, float* d_out, float* s_out) {
  const __m512 v0 = _mm512_loadu_ps(x);
  const __m512 v1 = _mm512_loadu_ps(x + 16);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const __m512 vid = _mm512_set1_ps(id);
  const __m512i q0 = RoundAway(_mm512_mul_ps(v0, vid));
  const __m512i q1 = RoundAway(_mm512_mul_ps(v1, vid));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtepi32_epi8(q0));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), _mm512_cvtepi32_epi8(q1));
  const float dr = Fp16ToFp32(Fp32ToFp16(d));
  *d_out = dr;
  // s as the dot kernels use it: for q4_1/q5_1 the q8_1 block's f16 of sum(q) times the
  // unrounded d; for the fixed offsets of q4_0/q5_0/q8_0 the exact rounded d times sum(q), which
  // is what subtracting the offset from the integers amounts to.
  const float sum = static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1)));
  *s_out = q8_1_sum ? Fp16ToFp32(Fp32ToFp16(sum * d)) : dr * sum;
}

// ---- micro-kernel: R weight rows x C activation rows over all of K ----

struct WeightTile {
  const uint8_t* u;  // [rows, k_pad]
  const float* d16;  // [rows, n_pairs * 16]
  const float* m;    // [rows, n_blk16]
};

template <int R, int C>
void MicroKernel(const WeightTile& wt, int64_t r0, const VnniGemmActs& a, int64_t c0, float* out,
                 int64_t out_stride_f, int64_t col) {
  const int64_t k_pad = a.k_pad(), n_pairs = a.n_pairs(), n_blk16 = a.n_blk16();
  __m512 acc[R][C];
  #pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    #pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  }
  const uint8_t* wu[R];
  const float* wd[R];
  #pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    wu[r] = wt.u + (r0 + r) * k_pad;
    wd[r] = wt.d16 + (r0 + r) * n_pairs * 16;
  }
  const int8_t* xq[C];
  const float* xd[C];
  #pragma GCC unroll 4
  for (int c = 0; c < C; ++c) {
    xq[c] = a.q(c0 + c);
    xd[c] = a.d16(c0 + c);
  }
  for (int64_t p = 0; p < n_pairs; ++p) {
    __m512i wv[R];
    __m512 dw[R];
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      wv[r] = _mm512_load_si512(wu[r] + p * 64);
      dw[r] = _mm512_load_ps(wd[r] + p * 16);
    }
    #pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      const __m512i xv = _mm512_load_si512(xq[c] + p * 64);
      const __m512 dx = _mm512_load_ps(xd[c] + p * 16);
      #pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512i isum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[r], xv);
        acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw[r], dx), acc[r][c]);
      }
    }
  }
  // Offsets: sum over blocks of m_w * s_x, 16 blocks per step (padding is zero on both sides).
  for (int64_t b = 0; b < n_blk16; b += 16) {
    __m512 wm[R];
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r) wm[r] = _mm512_load_ps(wt.m + (r0 + r) * n_blk16 + b);
    #pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      const __m512 sx = _mm512_load_ps(a.s(c0 + c) + b);
      #pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][c] = _mm512_fmadd_ps(wm[r], sx, acc[r][c]);
    }
  }
  #pragma GCC unroll 4
  for (int c = 0; c < C; ++c) {
    float* orow = out + (c0 + c) * out_stride_f + col + r0;
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r) orow[r] = _mm512_reduce_add_ps(acc[r][c]);
  }
}

using MicroKernelFn = void (*)(const WeightTile&, int64_t, const VnniGemmActs&, int64_t, float*,
                               int64_t, int64_t);

template <int R>
constexpr MicroKernelFn KernelFor(int c) {
  switch (c) {
    case 1:
      return MicroKernel<R, 1>;
    case 2:
      return MicroKernel<R, 2>;
    case 3:
      return MicroKernel<R, 3>;
    default:
      return MicroKernel<R, 4>;
  }
}

MicroKernelFn SelectKernel(int r, int c) {
  switch (r) {
    case 1:
      return KernelFor<1>(c);
    case 2:
      return KernelFor<2>(c);
    case 3:
      return KernelFor<3>(c);
    default:
      return KernelFor<4>(c);
  }
}

constexpr int kR = 4;  // weight rows per micro-kernel call
constexpr int kC = 4;  // activation rows per micro-kernel call

// ---- decode kernel (layout in quant_gemm.h) ----

constexpr int64_t kPrefetchBytes = 2048;  // software prefetch distance in the weight stream
constexpr int64_t kGroupBytes = 192;  // 4 blocks: 64 + 64 bytes of values, 8 f32 of scales, pad

// One group of 4 q4 blocks starting at `blk` (block stride `bstride`, nibbles at +qs_off):
// adds the int32 sums to lanes 4j..4j+3 of block j and returns them.
inline __m512i GroupSums(const char* blk, int64_t bstride, int64_t qs_off, const int8_t* act) {
  __m512i z = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + qs_off)));
  z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + bstride + qs_off)), 1);
  z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2 * bstride + qs_off)), 2);
  z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 3 * bstride + qs_off)), 3);
  const __m512i mask = _mm512_set1_epi8(0x0F);
  const __m512i lo = _mm512_and_si512(z, mask);
  const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(z, 4), mask);
  const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_load_si512(act));
  return _mm512_dpbusd_epi32(p, hi, _mm512_load_si512(act + 64));
}

// [d_w, m_w] of 4 blocks as f32 (q4_1: the stored pair; q4_0: m_w = -8 d_w).
template <bool kHasMin>
inline __m256 GroupScales(const char* blk, int64_t bstride) {
  if constexpr (kHasMin) {
    return _mm256_cvtph_ps(_mm_setr_epi32(static_cast<int>(LoadU32(reinterpret_cast<const uint8_t*>(blk))),
                                          static_cast<int>(LoadU32(reinterpret_cast<const uint8_t*>(blk + bstride))),
                                          static_cast<int>(LoadU32(reinterpret_cast<const uint8_t*>(blk + 2 * bstride))),
                                          static_cast<int>(LoadU32(reinterpret_cast<const uint8_t*>(blk + 3 * bstride)))));
  } else {
    uint16_t h[4];
    for (int j = 0; j < 4; ++j) std::memcpy(&h[j], blk + j * bstride, 2);
    // Zero-extended halves convert to [d0, 0, d1, 0, ...]; fill the odd lanes with -8 d.
    const __m256 d = _mm256_cvtph_ps(_mm_setr_epi32(h[0], h[1], h[2], h[3]));
    const __m256 k = _mm256_setr_ps(0, -8, 0, -8, 0, -8, 0, -8);
    return _mm256_fmadd_ps(_mm256_moveldup_ps(d), k, d);
  }
}

template <bool kHasMin>
float DotQ4Grouped(int64_t k, const void* w_row, const void* act) {
  constexpr int64_t bstride = kHasMin ? sizeof(BlockQ4_1) : sizeof(BlockQ4_0);
  constexpr int64_t qs_off = kHasMin ? 4 : 2;
  const int64_t nb = k / kQK;
  const auto* w = static_cast<const char*>(w_row);
  const auto* a = static_cast<const int8_t*>(act);
  const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
  __m512 acc = _mm512_setzero_ps();
  __m256 mins = _mm256_setzero_ps();  // odd lanes: m_w * s_x per block
  auto group = [&](const char* blk, const int8_t* g) {
    const __m512i p = GroupSums(blk, bstride, qs_off, g);
    const __m256 prod = _mm256_mul_ps(GroupScales<kHasMin>(blk, bstride),
                                      _mm256_load_ps(reinterpret_cast<const float*>(g + 128)));
    mins = _mm256_add_ps(mins, prod);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p),
                          _mm512_permutexvar_ps(spread, _mm512_castps256_ps512(prod)), acc);
  };
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) {
    // The rows of w follow each other, so a fixed distance ahead also runs into the next row.
    _mm_prefetch(w + b * bstride + kPrefetchBytes, _MM_HINT_T0);
    _mm_prefetch(w + b * bstride + kPrefetchBytes + 64, _MM_HINT_T0);
    group(w + b * bstride, a + (b / 4) * kGroupBytes);
  }
  if (b < nb) {  // partial group: copy the remaining blocks into zeroed storage
    alignas(64) char tail[4 * bstride] = {};
    std::memcpy(tail, w + b * bstride, static_cast<size_t>((nb - b) * bstride));
    group(tail, a + (b / 4) * kGroupBytes);
  }
  alignas(32) float m[8];
  _mm256_store_ps(m, mins);
  return _mm512_reduce_add_ps(acc) + ((m[1] + m[3]) + (m[5] + m[7]));
}

}  // namespace

int64_t VnniQ4ActBytes(int64_t k) { return (k / kQK + 3) / 4 * kGroupBytes; }

void VnniQ4PackAct(DType weight, const float* x, int64_t k, void* dst) {
  const bool q8_1_sums = weight == DType::kQ4_1;
  const int64_t nb = k / kQK;
  auto* out = static_cast<int8_t*>(dst);
  std::memset(out, 0, static_cast<size_t>(VnniQ4ActBytes(k)));
  alignas(64) int8_t q[kQK];
  for (int64_t b = 0; b < nb; ++b) {
    int8_t* g = out + (b / 4) * kGroupBytes;
    const int64_t j = b % 4;
    auto* sc = reinterpret_cast<float*>(g + 128);
    QuantBlockQ8(x + b * kQK, q8_1_sums, q, &sc[2 * j], &sc[2 * j + 1]);
    std::memcpy(g + j * 16, q, 16);
    std::memcpy(g + 64 + j * 16, q + 16, 16);
  }
}

float VnniQ4Dot(DType weight, int64_t k, const void* w_row, const void* act) {
  return weight == DType::kQ4_1 ? DotQ4Grouped<true>(k, w_row, act)
                                : DotQ4Grouped<false>(k, w_row, act);
}

void Avx512QuantizeQ8Row(DType act, const float* x, void* dst, int64_t k) {
  MUNINN_CHECK(act == DType::kQ8_0 || act == DType::kQ8_1);
  const bool with_sum = act == DType::kQ8_1;
  const int64_t bytes = with_sum ? sizeof(BlockQ8_1) : sizeof(BlockQ8_0);
  auto* out = static_cast<char*>(dst);
  for (int64_t b = 0; b < k / kQK; ++b, x += kQK) {
    char* blk = out + b * bytes;
    const __m512 v0 = _mm512_loadu_ps(x);
    const __m512 v1 = _mm512_loadu_ps(x + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m512i q0 = RoundAway(_mm512_mul_ps(v0, _mm512_set1_ps(id)));
    const __m512i q1 = RoundAway(_mm512_mul_ps(v1, _mm512_set1_ps(id)));
    const uint16_t dh = Fp32ToFp16(d);
    std::memcpy(blk, &dh, 2);
    char* qs = blk + (with_sum ? 4 : 2);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs), _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 16), _mm512_cvtepi32_epi8(q1));
    if (with_sum) {
      const int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
      const uint16_t sh = Fp32ToFp16(static_cast<float>(sum) * d);
      std::memcpy(blk + 2, &sh, 2);
    }
  }
}

void VnniGemmActs::Free::operator()(void* p) const { std::free(p); }

bool VnniGemmSupports(DType weight) {
  switch (weight) {
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
    case DType::kQ5_1:
    case DType::kQ8_0:
      return true;
    default:
      return false;
  }
}

VnniGemmActs::VnniGemmActs(int64_t m, int64_t k)
    : m_(m), k_(k), k_pad_((k + 63) / 64 * 64), n_blk16_((k / kQK + 15) / 16 * 16) {
  MUNINN_CHECK(k % kQK == 0) << "VnniGemmActs: K = " << k << " is not a multiple of 32";
  const size_t rows = static_cast<size_t>(std::max<int64_t>(m, 1));
  q_.reset(static_cast<int8_t*>(AlignedZeroed(rows * static_cast<size_t>(k_pad_))));
  d16_.reset(static_cast<float*>(AlignedZeroed(rows * static_cast<size_t>(n_pairs()) * 64)));
  s_.reset(static_cast<float*>(AlignedZeroed(rows * static_cast<size_t>(n_blk16_) * 4)));
}

void VnniGemmActs::Pack(DType weight, const char* x, int64_t x_stride, int64_t begin,
                        int64_t end) {
  const bool q8_1_sums = weight == DType::kQ4_1 || weight == DType::kQ5_1;
  const int64_t nb = k_ / kQK;
  for (int64_t i = begin; i < end; ++i) {
    const auto* src = reinterpret_cast<const float*>(x + i * x_stride);
    int8_t* q = q_.get() + i * k_pad_;
    float* d16 = d16_.get() + i * n_pairs() * 16;
    float* s = s_.get() + i * n_blk16_;
    for (int64_t b = 0; b < nb; ++b) {
      float dr;
      QuantBlockQ8(src + b * kQK, q8_1_sums, q + b * kQK, &dr, &s[b]);
      SpreadScale(d16, b, dr);
    }
  }
}

void VnniGemm(DType weight, const char* w, int64_t w_stride, int64_t n_begin, int64_t n_end,
              const VnniGemmActs& acts, char* out, int64_t out_stride) {
  MUNINN_CHECK(out_stride % 4 == 0);
  const int64_t k_pad = acts.k_pad(), n_pairs = acts.n_pairs(), n_blk16 = acts.n_blk16();
  const int64_t nb = acts.k() / kQK;
  // A tile of unpacked weight rows stays in L2 while every activation row passes over it.
  const int64_t tile = std::clamp<int64_t>((256 << 10) / (k_pad + n_pairs * 64), kR, 256) / kR * kR;
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> u(static_cast<uint8_t*>(AlignedZeroed(tile * k_pad)));
  std::unique_ptr<float, Free> d16(static_cast<float*>(AlignedZeroed(tile * n_pairs * 64)));
  std::unique_ptr<float, Free> m(static_cast<float*>(AlignedZeroed(tile * n_blk16 * 4)));
  const WeightTile wt{u.get(), d16.get(), m.get()};
  auto* out_f = reinterpret_cast<float*>(out);
  const int64_t out_stride_f = out_stride / 4;
  for (int64_t t0 = n_begin; t0 < n_end; t0 += tile) {
    const int64_t rows = std::min(tile, n_end - t0);
    for (int64_t r = 0; r < rows; ++r) {
      UnpackRow(weight, w + (t0 + r) * w_stride, nb, u.get() + r * k_pad,
                d16.get() + r * n_pairs * 16, m.get() + r * n_blk16);
    }
    for (int64_t c0 = 0; c0 < acts.m(); c0 += kC) {
      const int cc = static_cast<int>(std::min<int64_t>(kC, acts.m() - c0));
      const MicroKernelFn full = SelectKernel(kR, cc);
      int64_t r0 = 0;
      for (; r0 + kR <= rows; r0 += kR) full(wt, r0, acts, c0, out_f, out_stride_f, t0);
      if (r0 < rows) {
        SelectKernel(static_cast<int>(rows - r0), cc)(wt, r0, acts, c0, out_f, out_stride_f, t0);
      }
    }
  }
}

}  // namespace muninn::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif
