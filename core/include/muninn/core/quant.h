// GGUF (ggml) block-quantized formats: byte layouts, and row conversion to and from float32.
//
// Every block stores `block_size` consecutive elements of one row. All multi-byte fields are
// little-endian; "f16" is an IEEE half (fp16.h). The layouts below are GGUF's, so tensors mapped
// straight from a .gguf file can be read in place. Dequantization is bit-exact with ggml's
// reference (checked against gguf-py in tests/core/quant_test.cc).
//
// Notation for an element's 4/5/6-bit code: q; its value: x.
//
// Thread-safe: all functions are pure.
#pragma once

#include <cstdint>

#include "muninn/core/dtype.h"
#include "muninn/core/status.h"

namespace muninn {

inline constexpr int kQK = 32;     // elements per block of the *_0 / *_1 formats
inline constexpr int kQK_K = 256;  // elements per super-block of the K formats

// q4_0, 18 bytes. x = (q - 8) * d.
//   [0, 2)   d   f16 scale
//   [2, 18)  qs  byte j holds element j in its low nibble and element j + 16 in its high nibble
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};

// q4_1, 20 bytes. x = q * d + m.
//   [0, 2) d f16 · [2, 4) m f16 (the block minimum) · [4, 20) qs as in q4_0
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};

// q5_0, 22 bytes. x = (q - 16) * d, q = low nibble from qs | (bit 4 from qh).
//   [0, 2)   d   f16
//   [2, 6)   qh  a little-endian uint32: bit i is bit 4 of element i (i = 0..31)
//   [6, 22)  qs  low 4 bits, nibble layout as in q4_0
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};

// q5_1, 24 bytes. x = q * d + m.
//   [0, 2) d f16 · [2, 4) m f16 · [4, 8) qh as in q5_0 · [8, 24) qs as in q5_0
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};

// q8_0, 34 bytes. x = q * d.
//   [0, 2) d f16 · [2, 34) qs int8, element j in byte j
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};

// q8_1, 36 bytes (activation side of q4_1/q5_1 dot products). x = q * d.
//   [0, 2) d f16 · [2, 4) s f16 = d * sum(qs) · [4, 36) qs int8
// (ggml's current layout; gguf-py's size table still lists an older 40-byte float variant, which
// never occurs in GGUF files.)
struct BlockQ8_1 {
  uint16_t d;
  uint16_t s;
  int8_t qs[kQK];
};

// q4_K, 144 bytes: a super-block of 8 sub-blocks of 32 elements.
//   x = d * sc[j] * q - dmin * mn[j] for element i in sub-block j = i / 32.
//   [0, 2)    d       f16 super-block scale for the sub-block scales
//   [2, 4)    dmin    f16 super-block scale for the sub-block minimums
//   [4, 16)   scales  eight 6-bit scales sc[j] and eight 6-bit mins mn[j]:
//                     j < 4:  sc[j] = s[j] & 63,            mn[j] = s[j + 4] & 63
//                     j >= 4: sc[j] = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4,
//                             mn[j] = (s[j + 4] >> 4) | (s[j] >> 6) << 4
//   [16, 144) qs      4 chunks of 32 bytes; chunk c byte l holds element 64c + l (low nibble)
//                     and element 64c + 32 + l (high nibble)
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[kQK_K / 2];
};

// q5_K, 176 bytes. As q4_K plus a fifth bit: q = nibble | (bit << 4).
//   [0, 2) d · [2, 4) dmin · [4, 16) scales (as q4_K)
//   [16, 48)  qh  byte l, bit b is bit 4 of element 32b + l
//   [48, 176) qs  as in q4_K
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};

// q6_K, 210 bytes. x = d * sc[i / 16] * (q - 32), q a 6-bit code.
//   [0, 128)    ql      two halves of 64 bytes; in half h (elements 128h..128h+127), byte l < 32
//                       holds element l (low nibble) and l + 64 (high nibble), byte 32 + l holds
//                       elements l + 32 (low) and l + 96 (high)  (element numbers within the half)
//   [128, 192)  qh      two halves of 32 bytes; byte l holds the top 2 bits of elements
//                       l (bits 0-1), l + 32 (bits 2-3), l + 64 (bits 4-5), l + 96 (bits 6-7)
//   [192, 208)  scales  int8, one per 16 elements
//   [208, 210)  d       f16
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};

// q8_K, 292 bytes (activation side of the K-quant dot products). x = q * d.
//   [0, 4) d f32 · [4, 260) qs int8 · [260, 292) bsums int16, sum of each 16 consecutive qs
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);
static_assert(alignof(BlockQ4_0) == 2 && alignof(BlockQ6_K) == 2 && alignof(BlockQ8_K) == 4);

// Converts n consecutive elements of one row of `dtype` at `src` to float32 at `dst` ([n]).
// Supported: f32, f16, bf16 and every quantized dtype (q8_1 and q8_K too). n must be a multiple of
// the block size (MUNINN_CHECK: callers validate tensor shapes first). `src` needs no alignment.
void DequantizeRow(DType dtype, const void* src, float* dst, int64_t n);

// Converts n floats at `src` into n elements of `dtype` at `dst` (RowBytes(dtype, n) bytes).
// Supported: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0 (bit-exact with ggml's reference
// quantizers), q8_1 and q8_K (activation formats). InvalidArgument for another dtype or an n that
// is negative or not a multiple of the block size.
Status QuantizeRow(DType dtype, const float* src, void* dst, int64_t n);

// Whether QuantizeRow accepts `dtype`.
bool CanQuantize(DType dtype);
// Whether DequantizeRow accepts `dtype`.
bool CanDequantize(DType dtype);

// Unpacks the 6-bit scale and min of sub-block j (0..7) of a q4_K/q5_K `scales` field.
inline void UnpackScaleMinK4(const uint8_t* scales, int j, uint8_t* sc, uint8_t* mn) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *mn = scales[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4));
    *mn = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

}  // namespace muninn
