// GGUF on-disk constants and the table of ggml tensor types.
//
// A GGUF file (versions 2 and 3; all integers little-endian) is:
//   u32 magic "GGUF" (bytes 47 47 55 46) | u32 version | u64 tensor_count | u64 metadata_kv_count
//   metadata_kv_count x { string key | u32 value_type | value }
//   tensor_count x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   padding to `general.alignment` (default 32) | data section
// where a string is { u64 length | bytes (UTF-8, no terminator) } and an array value is
// { u32 element_type | u64 count | elements }. Tensor offsets are relative to the start of the
// data section and multiples of the alignment. Version 3 only added big-endian files, which
// muninn does not read (their version field reads as 0x03000000 and is reported as such).
//
// ne lists dimensions innermost first (ggml order): a weight [n_out, n_in] in muninn (outermost
// first, see core/tensor.h) is ne = {n_in, n_out} in GGUF. Readers and the writer reverse it.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "muninn/core/dtype.h"

namespace muninn::model {

inline constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
inline constexpr uint32_t kGgufDefaultAlignment = 32;
inline constexpr int kGgufMaxDims = 4;              // ggml's GGML_MAX_DIMS
inline constexpr uint64_t kGgufMaxTensorName = 64;  // bytes, per the GGUF specification

// One ggml tensor type as GGUF stores it.
struct GgufTypeInfo {
  uint32_t id;                // the ggml_type number written in the file
  std::string_view name;      // lower-case ggml name: "f32", "q4_K", "iq2_xxs"
  int64_t block_size;         // elements per block (1 for plain types)
  uint64_t type_size;         // bytes per block
  std::optional<DType> dtype; // the muninn dtype, or nullopt when muninn cannot compute with it
};

// The entry for `id`, or nullptr when the id is not a type this build knows (removed ids such as
// 4/5, or ids newer than this table).
const GgufTypeInfo* FindGgufType(uint32_t id);
// The ggml type id for a muninn dtype, or nullopt for dtypes GGUF has no id for here.
std::optional<uint32_t> GgufTypeForDType(DType dtype);

}  // namespace muninn::model
