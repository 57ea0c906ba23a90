// DType: the element types a Tensor can hold, including GGUF's block-quantized formats.
//
// A quantized dtype packs `block_size` consecutive elements of a row into a block of `block_bytes`
// bytes; the innermost dimension of such a tensor must be a multiple of block_size and contiguous.
// The byte layouts are GGUF's (ggml's), described in core/include/muninn/core/quant.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace muninn {

enum class DType : uint8_t {
  kF32 = 0,
  kF16,
  kBF16,
  kF64,
  kI32,
  kI64,
  kU8,
  kQ4_0,
  kQ4_1,
  kQ5_0,
  kQ5_1,
  kQ8_0,
  kQ8_1,  // activation-side format (block sum precomputed), used by quantized dot products
  kQ4_K,
  kQ5_K,
  kQ6_K,
  kQ8_K,  // activation-side format for the K-quants
  kCount,
};

struct DTypeInfo {
  std::string_view name;  // "f32", "q4_0", ... (GGUF's lower-case names)
  int64_t block_size;     // elements per block; 1 for plain types
  size_t block_bytes;     // bytes per block; the element size for plain types
  bool quantized;
};

const DTypeInfo& GetDTypeInfo(DType dtype);
inline std::string_view DTypeName(DType d) { return GetDTypeInfo(d).name; }
inline bool IsQuantized(DType d) { return GetDTypeInfo(d).quantized; }
inline int64_t BlockSize(DType d) { return GetDTypeInfo(d).block_size; }

// Bytes taken by `n` consecutive elements of a row; std::nullopt if n is negative, not a
// multiple of the block size, or the product overflows.
std::optional<size_t> RowBytes(DType dtype, int64_t n);

// Parses a name as printed by DTypeName.
std::optional<DType> DTypeFromName(std::string_view name);

}  // namespace muninn
