// Scalar reference dot kernels: the portable path, and the definition the SIMD kernels are tested
// against. Integer products per block, one float multiply-add per block (or sub-block).
#include "cpu/quant_dot.h"

#include <cstring>

#include "muninn/core/fp16.h"
#include "muninn/core/quant.h"

namespace muninn::cpu {
namespace {

uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

float DotQ4_0(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ4_0*>(vw);
  const auto* x = static_cast<const BlockQ8_0*>(vx);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    int isum = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      isum += ((w[i].qs[j] & 0xF) - 8) * x[i].qs[j];
      isum += ((w[i].qs[j] >> 4) - 8) * x[i].qs[j + kQK / 2];
    }
    sum += static_cast<float>(isum) * (Fp16ToFp32(w[i].d) * Fp16ToFp32(x[i].d));
  }
  return sum;
}

float DotQ4_1(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ4_1*>(vw);
  const auto* x = static_cast<const BlockQ8_1*>(vx);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    int isum = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      isum += (w[i].qs[j] & 0xF) * x[i].qs[j];
      isum += (w[i].qs[j] >> 4) * x[i].qs[j + kQK / 2];
    }
    // sum (q d_w + m)(q_x d_x) = d_w d_x sum q q_x + m * (d_x sum q_x); the last factor is s.
    sum += static_cast<float>(isum) * (Fp16ToFp32(w[i].d) * Fp16ToFp32(x[i].d)) +
           Fp16ToFp32(w[i].m) * Fp16ToFp32(x[i].s);
  }
  return sum;
}

float DotQ5_0(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ5_0*>(vw);
  const auto* x = static_cast<const BlockQ8_0*>(vx);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    const uint32_t qh = LoadU32(w[i].qh);
    int isum = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = ((w[i].qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4)) - 16;
      const int q1 = ((w[i].qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4)) - 16;
      isum += q0 * x[i].qs[j] + q1 * x[i].qs[j + kQK / 2];
    }
    sum += static_cast<float>(isum) * (Fp16ToFp32(w[i].d) * Fp16ToFp32(x[i].d));
  }
  return sum;
}

float DotQ5_1(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ5_1*>(vw);
  const auto* x = static_cast<const BlockQ8_1*>(vx);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    const uint32_t qh = LoadU32(w[i].qh);
    int isum = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = (w[i].qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4);
      const int q1 = (w[i].qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
      isum += q0 * x[i].qs[j] + q1 * x[i].qs[j + kQK / 2];
    }
    sum += static_cast<float>(isum) * (Fp16ToFp32(w[i].d) * Fp16ToFp32(x[i].d)) +
           Fp16ToFp32(w[i].m) * Fp16ToFp32(x[i].s);
  }
  return sum;
}

float DotQ8_0(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ8_0*>(vw);
  const auto* x = static_cast<const BlockQ8_0*>(vx);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    int isum = 0;
    for (int j = 0; j < kQK; ++j) isum += w[i].qs[j] * x[i].qs[j];
    sum += static_cast<float>(isum) * (Fp16ToFp32(w[i].d) * Fp16ToFp32(x[i].d));
  }
  return sum;
}

// Sum of the activation codes of sub-block j (32 elements) of a q8_K block.
int SubBlockSum32(const BlockQ8_K& x, int j) { return x.bsums[2 * j] + x.bsums[2 * j + 1]; }

float DotQ4_K(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ4_K*>(vw);
  const auto* x = static_cast<const BlockQ8_K*>(vx);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    int sumi = 0, summ = 0;
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, mn;
      UnpackScaleMinK4(w[i].scales, j, &sc, &mn);
      const uint8_t* q = w[i].qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      const int8_t* xq = x[i].qs + 32 * j;
      int s = 0;
      for (int l = 0; l < 32; ++l) s += ((q[l] >> shift) & 0xF) * xq[l];
      sumi += sc * s;
      summ += mn * SubBlockSum32(x[i], j);
    }
    const float d = Fp16ToFp32(w[i].d) * x[i].d;
    const float dmin = Fp16ToFp32(w[i].dmin) * x[i].d;
    sum += d * static_cast<float>(sumi) - dmin * static_cast<float>(summ);
  }
  return sum;
}

float DotQ5_K(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ5_K*>(vw);
  const auto* x = static_cast<const BlockQ8_K*>(vx);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    int sumi = 0, summ = 0;
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, mn;
      UnpackScaleMinK4(w[i].scales, j, &sc, &mn);
      const uint8_t* q = w[i].qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      const int8_t* xq = x[i].qs + 32 * j;
      int s = 0;
      for (int l = 0; l < 32; ++l) {
        const int v = ((q[l] >> shift) & 0xF) | (((w[i].qh[l] >> j) & 1) << 4);
        s += v * xq[l];
      }
      sumi += sc * s;
      summ += mn * SubBlockSum32(x[i], j);
    }
    const float d = Fp16ToFp32(w[i].d) * x[i].d;
    const float dmin = Fp16ToFp32(w[i].dmin) * x[i].d;
    sum += d * static_cast<float>(sumi) - dmin * static_cast<float>(summ);
  }
  return sum;
}

float DotQ6_K(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const BlockQ6_K*>(vw);
  const auto* x = static_cast<const BlockQ8_K*>(vx);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    int sumi = 0;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = w[i].ql + 64 * h;
      const uint8_t* qh = w[i].qh + 32 * h;
      const int8_t* xq = x[i].qs + 128 * h;
      // Quarter k holds elements 32k..32k+31 of this half: nibble from ql[(k%2)*32 + l] (low for
      // k < 2), top bits 2k..2k+1 of qh[l].
      for (int k = 0; k < 4; ++k) {
        const uint8_t* lo = ql + 32 * (k % 2);
        const int nshift = 4 * (k / 2);
        for (int g = 0; g < 2; ++g) {
          int s = 0;
          for (int l = 16 * g; l < 16 * g + 16; ++l) {
            const int q = (((lo[l] >> nshift) & 0xF) | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
            s += q * xq[32 * k + l];
          }
          sumi += w[i].scales[8 * h + 2 * k + g] * s;
        }
      }
    }
    sum += Fp16ToFp32(w[i].d) * x[i].d * static_cast<float>(sumi);
  }
  return sum;
}

float DotF32(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const float*>(vw);
  const auto* x = static_cast<const float*>(vx);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += w[i] * x[i];
  return sum;
}

float DotF16(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const uint16_t*>(vw);
  const auto* x = static_cast<const float*>(vx);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += Fp16ToFp32(w[i]) * x[i];
  return sum;
}

float DotBF16(int64_t n, const void* vw, const void* vx) {
  const auto* w = static_cast<const uint16_t*>(vw);
  const auto* x = static_cast<const float*>(vx);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += Bf16ToFp32(w[i]) * x[i];
  return sum;
}

}  // namespace

DType ActivationDType(DType weight) {
  switch (weight) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
      return DType::kF32;
    case DType::kQ4_0:
    case DType::kQ5_0:
    case DType::kQ8_0:
      return DType::kQ8_0;
    case DType::kQ4_1:
    case DType::kQ5_1:
      return DType::kQ8_1;
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return DType::kQ8_K;
    default:
      return DType::kCount;
  }
}

VecDotFn ScalarVecDot(DType weight) {
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

VecDotFn SelectVecDot(DType weight, CpuIsa isa) {
  VecDotFn fn = nullptr;
  if (isa == CpuIsa::kAvx512 && GetCpuFeatures().avx512vnni) fn = Avx512VnniVecDot(weight);
  if (fn == nullptr && isa == CpuIsa::kAvx512) fn = Avx512VecDot(weight);
  if (fn == nullptr && (isa == CpuIsa::kAvx512 || isa == CpuIsa::kAvx2)) fn = Avx2VecDot(weight);
  if (fn == nullptr) fn = ScalarVecDot(weight);
  return fn;
}

}  // namespace muninn::cpu
