// Private to the CUDA backend: decoding GGUF blocks (layouts in muninn/core/quant.h) a few
// elements at a time, for the kernels and for host tests.
//
// The functions are `__host__ __device__` under nvcc and plain inline C++ under a host compiler,
// so tests/core/cuda_block_decode_test.cc checks them against DequantizeRow on the CPU, where no
// GPU is needed. Each decoder produces kChunk consecutive elements of a row starting at element
// kChunk * c, reading only the bytes of that row (`row` points at its first block; rows of block
// formats are 2-byte aligned, checked by the backend before a kernel runs).
//
// Thread-safe: pure functions.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "muninn/core/dtype.h"
#include "muninn/core/fp16.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define MUNINN_HD __host__ __device__ __forceinline__
#else
#define MUNINN_HD inline
#endif
#if defined(__CUDA_ARCH__)  // the device pass only (the host compiler knows no such pragma)
#define MUNINN_UNROLL _Pragma("unroll")
#else
#define MUNINN_UNROLL
#endif

namespace muninn::cuda {

MUNINN_HD float HalfBitsToFloat(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
#endif
}

MUNINN_HD float Bf16BitsToFloat(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
#else
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
#endif
}

// Products and sums rounded separately, never fused into an FMA (nvcc contracts a * b + c by
// default): decoded values are then bit-identical to DequantizeRow's, so a GPU Copy or GetRows
// equals the CPU's exactly, and a conversion to f16 cannot round the other way.
MUNINN_HD float MulRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

MUNINN_HD float AddRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// Little-endian u16 at a 2-byte-aligned address.
MUNINN_HD uint16_t LoadU16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }

// Decoder for dtype DT: kChunk elements per call (1 for plain types, 8 for block formats, so a
// chunk never straddles a block). Block offsets and field positions are quant.h's.
template <DType DT>
struct BlockDecoder;

template <>
struct BlockDecoder<DType::kF32> {
  static constexpr int kChunk = 1;
  MUNINN_HD static void Decode(const uint8_t* row, int64_t c, float* y) {
    y[0] = reinterpret_cast<const float*>(row)[c];
  }
};

template <>
struct BlockDecoder<DType::kF16> {
  static constexpr int kChunk = 1;
  MUNINN_HD static void Decode(const uint8_t* row, int64_t c, float* y) {
    y[0] = HalfBitsToFloat(reinterpret_cast<const uint16_t*>(row)[c]);
  }
};

template <>
struct BlockDecoder<DType::kBF16> {
  static constexpr int kChunk = 1;
  MUNINN_HD static void Decode(const uint8_t* row, int64_t c, float* y) {
    y[0] = Bf16BitsToFloat(reinterpret_cast<const uint16_t*>(row)[c]);
  }
};

// q4_0: 18-byte blocks of 32; element j < 16 is the low nibble of qs[j], j >= 16 the high nibble
// of qs[j - 16]; x = (q - 8) * d.
template <>
struct BlockDecoder<DType::kQ4_0> {
  static constexpr int kChunk = 8;
  MUNINN_HD static void Decode(const uint8_t* row, int64_t c, float* y) {
    const uint8_t* b = row + (c / 4) * 18;
    const int j0 = static_cast<int>(c % 4) * 8;
    const float d = HalfBitsToFloat(LoadU16(b));
    const uint8_t* qs = b + 2 + (j0 & 15);
    const int shift = j0 >= 16 ? 4 : 0;
    for (int i = 0; i < 8; ++i) {
      y[i] = MulRn(static_cast<float>(((qs[i] >> shift) & 0xF) - 8), d);
    }
  }
};

// q4_1: 20-byte blocks of 32; nibbles as q4_0; x = q * d + m.
template <>
struct BlockDecoder<DType::kQ4_1> {
  static constexpr int kChunk = 8;
  MUNINN_HD static void Decode(const uint8_t* row, int64_t c, float* y) {
    const uint8_t* b = row + (c / 4) * 20;
    const int j0 = static_cast<int>(c % 4) * 8;
    const float d = HalfBitsToFloat(LoadU16(b));
    const float m = HalfBitsToFloat(LoadU16(b + 2));
    const uint8_t* qs = b + 4 + (j0 & 15);
    const int shift = j0 >= 16 ? 4 : 0;
    for (int i = 0; i < 8; ++i) {
      y[i] = AddRn(MulRn(static_cast<float>((qs[i] >> shift) & 0xF), d), m);
    }
  }
};

// Little-endian u32 from 4 bytes at any address (q5_0's qh sits at byte 2 of its block).
MUNINN_HD uint32_t LoadU32Bytes(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

// q5_0: 22-byte blocks of 32; the low 4 bits as q4_0 (qs at byte 6), bit 4 of element j is bit j
// of the little-endian u32 qh at byte 2; x = (q - 16) * d.
template <>
struct BlockDecoder<DType::kQ5_0> {
  static constexpr int kChunk = 8;
  MUNINN_HD static void Decode(const uint8_t* row, int64_t c, float* y) {
    const uint8_t* b = row + (c / 4) * 22;
    const int j0 = static_cast<int>(c % 4) * 8;
    const float d = HalfBitsToFloat(LoadU16(b));
    const uint32_t qh = LoadU32Bytes(b + 2);
    const uint8_t* qs = b + 6 + (j0 & 15);
    const int shift = j0 >= 16 ? 4 : 0;
    for (int i = 0; i < 8; ++i) {
      const int q = ((qs[i] >> shift) & 0xF) | static_cast<int>(((qh >> (j0 + i)) & 1u) << 4);
      y[i] = MulRn(static_cast<float>(q - 16), d);
    }
  }
};

// q5_1: 24-byte blocks of 32; d, m, then qh and qs as q5_0 (at bytes 4 and 8); x = q * d + m.
template <>
struct BlockDecoder<DType::kQ5_1> {
  static constexpr int kChunk = 8;
  MUNINN_HD static void Decode(const uint8_t* row, int64_t c, float* y) {
    const uint8_t* b = row + (c / 4) * 24;
    const int j0 = static_cast<int>(c % 4) * 8;
    const float d = HalfBitsToFloat(LoadU16(b));
    const float m = HalfBitsToFloat(LoadU16(b + 2));
    const uint32_t qh = LoadU32Bytes(b + 4);
    const uint8_t* qs = b + 8 + (j0 & 15);
    const int shift = j0 >= 16 ? 4 : 0;
    for (int i = 0; i < 8; ++i) {
      const int q = ((qs[i] >> shift) & 0xF) | static_cast<int>(((qh >> (j0 + i)) & 1u) << 4);
      y[i] = AddRn(MulRn(static_cast<float>(q), d), m);
    }
  }
};

// q8_0: 34-byte blocks of 32; x = qs[j] * d.
template <>
struct BlockDecoder<DType::kQ8_0> {
  static constexpr int kChunk = 8;
  MUNINN_HD static void Decode(const uint8_t* row, int64_t c, float* y) {
    const uint8_t* b = row + (c / 4) * 34;
    const int j0 = static_cast<int>(c % 4) * 8;
    const float d = HalfBitsToFloat(LoadU16(b));
    const auto* qs = reinterpret_cast<const int8_t*>(b + 2 + j0);
    for (int i = 0; i < 8; ++i) y[i] = MulRn(static_cast<float>(qs[i]), d);
  }
};

// q4_K and q5_K: the scale d * sc[j] and the minimum dmin * mn[j] of sub-block j (of 8) of the
// super-block at `b` (d at byte 0, dmin at 2, the 12 packed 6-bit scales and minimums at 4).
MUNINN_HD void SubBlockScaleMin(const uint8_t* b, int j, float* d, float* m) {
  const uint8_t* s = b + 4;
  int sc, mn;
  if (j < 4) {
    sc = s[j] & 63;
    mn = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
  *d = MulRn(HalfBitsToFloat(LoadU16(b)), static_cast<float>(sc));
  *m = MulRn(HalfBitsToFloat(LoadU16(b + 2)), static_cast<float>(mn));
}

// q4_K: 144-byte super-blocks of 256. Element i (in the super-block) lies in sub-block j = i / 32
// and in 32-byte chunk i / 64 of qs, low nibble for (i % 64) < 32, high nibble otherwise;
// x = (d * sc[j]) * q - dmin * mn[j].
template <>
struct BlockDecoder<DType::kQ4_K> {
  static constexpr int kChunk = 8;
  MUNINN_HD static void Decode(const uint8_t* row, int64_t c, float* y) {
    const uint8_t* b = row + (c / 32) * 144;
    const int i0 = static_cast<int>(c % 32) * 8;
    float d, m;
    SubBlockScaleMin(b, i0 / 32, &d, &m);
    const int l0 = i0 % 64;
    const uint8_t* qs = b + 16 + (i0 / 64) * 32 + (l0 & 31);
    const int shift = l0 >= 32 ? 4 : 0;
    for (int i = 0; i < 8; ++i) {
      y[i] = AddRn(MulRn(d, static_cast<float>((qs[i] >> shift) & 0xF)), -m);
    }
  }
};

// q5_K: 176-byte super-blocks of 256: q4_K's d, dmin and scales, then qh (32 bytes: bit j of
// byte l is bit 4 of element 32 j + l) and q4_K's qs at byte 48; x = (d * sc[j]) * q - dmin * mn[j].
template <>
struct BlockDecoder<DType::kQ5_K> {
  static constexpr int kChunk = 8;
  MUNINN_HD static void Decode(const uint8_t* row, int64_t c, float* y) {
    const uint8_t* b = row + (c / 32) * 176;
    const int i0 = static_cast<int>(c % 32) * 8;
    const int j = i0 / 32;
    float d, m;
    SubBlockScaleMin(b, j, &d, &m);
    const int l0 = i0 % 32;
    const uint8_t* qh = b + 16 + l0;
    const uint8_t* qs = b + 48 + (i0 / 64) * 32 + l0;
    const int shift = (i0 % 64) >= 32 ? 4 : 0;
    for (int i = 0; i < 8; ++i) {
      const int q = ((qs[i] >> shift) & 0xF) | (((qh[i] >> j) & 1) << 4);
      y[i] = AddRn(MulRn(d, static_cast<float>(q)), -m);
    }
  }
};

// q6_K: 210-byte super-blocks of 256. Element i: half h = i / 128, quarter qd = (i % 128) / 32,
// l = i % 32; low 4 bits in ql[64h + 32 (qd & 1) + l] (low nibble for qd < 2, high otherwise),
// top 2 bits in qh[32h + l] at bit 2 qd; x = d * scales[i / 16] * (q - 32).
template <>
struct BlockDecoder<DType::kQ6_K> {
  static constexpr int kChunk = 8;
  MUNINN_HD static void Decode(const uint8_t* row, int64_t c, float* y) {
    const uint8_t* b = row + (c / 32) * 210;
    const int i0 = static_cast<int>(c % 32) * 8;
    const int h = i0 / 128, qd = (i0 % 128) / 32, l0 = i0 % 32;
    const uint8_t* ql = b + 64 * h + 32 * (qd & 1) + l0;
    const uint8_t* qh = b + 128 + 32 * h + l0;
    const int lshift = qd >= 2 ? 4 : 0;
    const int hshift = 2 * qd;
    const float d = HalfBitsToFloat(LoadU16(b + 208));
    const float scale = MulRn(d, static_cast<float>(reinterpret_cast<const int8_t*>(b + 192)[i0 / 16]));
    for (int i = 0; i < 8; ++i) {
      const int q = (((ql[i] >> lshift) & 0xF) | (((qh[i] >> hshift) & 3) << 4)) - 32;
      y[i] = MulRn(scale, static_cast<float>(q));
    }
  }
};

// Whether the CUDA kernels decode `dtype` (weights of MatMul/GetRows, sources of Copy).
// ---- encoding (f32 -> q8_0: the quantized KV cache) ----

MUNINN_HD uint16_t FloatToHalfBits(float x) {
#if defined(__CUDA_ARCH__)
  return __half_as_ushort(__float2half_rn(x));
#else
  return Fp32ToFp16(x);
#endif
}

MUNINN_HD float RoundHalfAway(float x) {
#if defined(__CUDA_ARCH__)
  return roundf(x);
#else
  return std::roundf(x);
#endif
}

// One q8_0 block (34 bytes: f16 scale d, 32 int8) from 32 floats, bit for bit as QuantizeRow
// (quant.cc): d = max |x| / 127, q = round-half-away(x / d) computed as x · (1 / d).
MUNINN_HD void EncodeQ8_0Block(const float* x, uint8_t* block) {
  float amax = 0.0f;
  MUNINN_UNROLL
  for (int j = 0; j < 32; ++j) {
    const float a = x[j] < 0.0f ? -x[j] : x[j];
    amax = amax < a ? a : amax;  // std::max(amax, a), as quant.cc
  }
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const uint16_t dh = FloatToHalfBits(d);
  block[0] = static_cast<uint8_t>(dh & 0xffu);
  block[1] = static_cast<uint8_t>(dh >> 8);
  MUNINN_UNROLL
  for (int j = 0; j < 32; ++j) {
    block[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(RoundHalfAway(MulRn(x[j], id))));
  }
}

MUNINN_HD bool CudaDecodes(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
    case DType::kQ5_1:
    case DType::kQ8_0:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return true;
    default:
      return false;
  }
}

// ---- lane slices: a block shared by eight lanes (matvec.cu's coalesced decode kernel) ----------
// Lane t (0..7) of the eight that share a block of 32 weights takes its elements 4t .. 4t + 3, so
// the lanes of a warp read the activations as one contiguous run of float4s. Load gives the
// block's scale d, its minimum m (0 without one) and the four quantized values q (as integers in
// float; q4_0's minus 8), so that element 4t + i = q[i] * d + m. Reads only that block's bytes,
// with 16-bit loads (q4_0, q8_0: 2-byte-aligned blocks) or 32-bit ones (q4_1: 4-byte-aligned).
template <DType DT>
struct LaneSlice;

template <>
struct LaneSlice<DType::kQ4_0> {  // 18 bytes: f16 d, 16 bytes of nibbles
  static constexpr int kBytes = 18;
  static constexpr bool kHasMin = false;
  MUNINN_HD static void Load(const uint8_t* b, int t, float* d, float* m, float* q) {
    *d = HalfBitsToFloat(LoadU16(b));
    *m = 0.0f;
    const uint8_t* qs = b + 2 + 4 * (t & 3);  // bytes 4(t mod 4) ..; high nibbles for t >= 4
    const uint32_t w = static_cast<uint32_t>(LoadU16(qs)) | static_cast<uint32_t>(LoadU16(qs + 2))
                                                                << 16;
    const int shift = t >= 4 ? 4 : 0;
    MUNINN_UNROLL
    for (int i = 0; i < 4; ++i)
      q[i] = static_cast<float>(static_cast<int>((w >> (8 * i + shift)) & 0xF) - 8);
  }
};

template <>
struct LaneSlice<DType::kQ4_1> {  // 20 bytes: f16 d, f16 m, 16 bytes of nibbles
  static constexpr int kBytes = 20;
  static constexpr bool kHasMin = true;
  MUNINN_HD static void Load(const uint8_t* b, int t, float* d, float* m, float* q) {
    const uint32_t dm = *reinterpret_cast<const uint32_t*>(b);
    *d = HalfBitsToFloat(static_cast<uint16_t>(dm & 0xFFFF));
    *m = HalfBitsToFloat(static_cast<uint16_t>(dm >> 16));
    const uint32_t w = *reinterpret_cast<const uint32_t*>(b + 4 + 4 * (t & 3));
    const int shift = t >= 4 ? 4 : 0;
    MUNINN_UNROLL
    for (int i = 0; i < 4; ++i) q[i] = static_cast<float>((w >> (8 * i + shift)) & 0xF);
  }
};

template <>
struct LaneSlice<DType::kQ8_0> {  // 34 bytes: f16 d, 32 int8
  static constexpr int kBytes = 34;
  static constexpr bool kHasMin = false;
  MUNINN_HD static void Load(const uint8_t* b, int t, float* d, float* m, float* q) {
    *d = HalfBitsToFloat(LoadU16(b));
    *m = 0.0f;
    const uint8_t* qs = b + 2 + 4 * t;
    const uint16_t lo = LoadU16(qs), hi = LoadU16(qs + 2);
    q[0] = static_cast<float>(static_cast<int8_t>(lo & 0xFF));
    q[1] = static_cast<float>(static_cast<int8_t>(lo >> 8));
    q[2] = static_cast<float>(static_cast<int8_t>(hi & 0xFF));
    q[3] = static_cast<float>(static_cast<int8_t>(hi >> 8));
  }
};

// Lane t's share of a block's dot product with activations x[0..3] (the block's elements
// 4t .. 4t + 3): d * sum(q x) + m * sum(x). Summed over the eight lanes it is the block's dot
// product, up to rounding.
template <DType DT>
MUNINN_HD float LaneDot(const uint8_t* block, int t, const float* x) {
  float d, m, q[4];
  LaneSlice<DT>::Load(block, t, &d, &m, q);
  const float sq = q[0] * x[0] + q[1] * x[1] + q[2] * x[2] + q[3] * x[3];
  if constexpr (LaneSlice<DT>::kHasMin) return d * sq + m * ((x[0] + x[1]) + (x[2] + x[3]));
  return d * sq;
}

}  // namespace muninn::cuda
