// Test helpers for the block formats: random rows of any weight dtype.
#pragma once

#include <cstring>
#include <random>
#include <vector>

#include "muninn/core/fp16.h"
#include "muninn/core/quant.h"
#include "muninn/core/tensor.h"

namespace muninn::testing {

// Offsets of the f16 scale fields in a K-quant block; they get finite random values, the rest of
// the block is random bytes (every code, scale and min pattern is legal).
inline std::vector<size_t> KHalfFields(DType d) {
  switch (d) {
    case DType::kQ4_K:
    case DType::kQ5_K:
      return {0, 2};
    case DType::kQ6_K:
      return {208};
    default:
      return {};
  }
}

// Fills `row` (n elements of `dtype`, packed) with random content: quantized Gaussian values for
// the formats QuantizeRow writes, random blocks with sane scales for the K-quants.
inline void FillRandomRow(DType dtype, int64_t n, std::mt19937& rng, void* row) {
  std::normal_distribution<float> normal;
  if (CanQuantize(dtype)) {
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = normal(rng);
    (void)QuantizeRow(dtype, x.data(), row, n);
    return;
  }
  const size_t bb = GetDTypeInfo(dtype).block_bytes;
  const int64_t nb = n / BlockSize(dtype);
  auto* p = static_cast<uint8_t*>(row);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int64_t b = 0; b < nb; ++b, p += bb) {
    for (size_t i = 0; i < bb; ++i) p[i] = static_cast<uint8_t>(byte(rng));
    for (size_t off : KHalfFields(dtype)) {
      const uint16_t h = Fp32ToFp16(0.02f * normal(rng));
      std::memcpy(p + off, &h, 2);
    }
  }
}

// A [rows, n] tensor of `dtype` whose row stride is `pad` elements longer than packed (a view
// into a wider buffer when pad > 0).
inline Tensor RandomMatrix(DType dtype, int64_t rows, int64_t n, int64_t pad, std::mt19937& rng) {
  Tensor wide = Tensor::Empty(dtype, Shape{rows, n + pad}).value();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t idx[1] = {r};
    FillRandomRow(dtype, n + pad, rng, wide.row_ptr(idx));
  }
  return pad == 0 ? wide : wide.Slice(1, 0, n).value();
}

// Row r of a 2-d tensor as f32 (via DequantizeRow).
inline std::vector<float> RowAsFloat(const Tensor& t, int64_t r) {
  std::vector<float> out(static_cast<size_t>(t.dim(-1)));
  const int64_t idx[1] = {r};
  DequantizeRow(t.dtype(), t.ndim() == 1 ? t.data() : t.row_ptr(idx), out.data(), t.dim(-1));
  return out;
}

}  // namespace muninn::testing
