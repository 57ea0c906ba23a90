#include "muninn/core/dtype.h"

#include <array>

#include "muninn/core/check.h"

namespace muninn {
namespace {

constexpr std::array<DTypeInfo, static_cast<size_t>(DType::kCount)> kInfos = {{
    {"f32", 1, 4, false},
    {"f16", 1, 2, false},
    {"bf16", 1, 2, false},
    {"f64", 1, 8, false},
    {"i32", 1, 4, false},
    {"i64", 1, 8, false},
    {"u8", 1, 1, false},
    {"q4_0", 32, 2 + 16, true},
    {"q4_1", 32, 2 + 2 + 16, true},
    {"q5_0", 32, 2 + 4 + 16, true},
    {"q5_1", 32, 2 + 2 + 4 + 16, true},
    {"q8_0", 32, 2 + 32, true},
    {"q8_1", 32, 2 + 2 + 32, true},
    {"q4_K", 256, 2 + 2 + 12 + 128, true},
    {"q5_K", 256, 2 + 2 + 12 + 32 + 128, true},
    {"q6_K", 256, 128 + 64 + 16 + 2, true},
    {"q8_K", 256, 4 + 256 + 32, true},
}};

}  // namespace

const DTypeInfo& GetDTypeInfo(DType dtype) {
  const auto i = static_cast<size_t>(dtype);
  MUNINN_CHECK(i < kInfos.size()) << "bad dtype " << i;
  return kInfos[i];
}

std::optional<size_t> RowBytes(DType dtype, int64_t n) {
  const DTypeInfo& info = GetDTypeInfo(dtype);
  if (n < 0 || n % info.block_size != 0) return std::nullopt;
  const uint64_t blocks = static_cast<uint64_t>(n / info.block_size);
  size_t bytes;
  if (__builtin_mul_overflow(blocks, info.block_bytes, &bytes)) return std::nullopt;
  return bytes;
}

std::optional<DType> DTypeFromName(std::string_view name) {
  for (size_t i = 0; i < kInfos.size(); ++i) {
    if (kInfos[i].name == name) return static_cast<DType>(i);
  }
  return std::nullopt;
}

}  // namespace muninn
