#include "muninn/model/gguf_format.h"

namespace muninn::model {
namespace {

// Sizes are the ggml block layouts (ggml-common.h); every type a current GGUF may contain is
// listed so that files with types muninn cannot compute with still parse and can be inspected.
constexpr GgufTypeInfo kTypes[] = {
    {0, "f32", 1, 4, DType::kF32},
    {1, "f16", 1, 2, DType::kF16},
    {2, "q4_0", 32, 18, DType::kQ4_0},
    {3, "q4_1", 32, 20, DType::kQ4_1},
    {6, "q5_0", 32, 22, DType::kQ5_0},
    {7, "q5_1", 32, 24, DType::kQ5_1},
    {8, "q8_0", 32, 34, DType::kQ8_0},
    {9, "q8_1", 32, 36, std::nullopt},
    {10, "q2_K", 256, 84, std::nullopt},
    {11, "q3_K", 256, 110, std::nullopt},
    {12, "q4_K", 256, 144, DType::kQ4_K},
    {13, "q5_K", 256, 176, DType::kQ5_K},
    {14, "q6_K", 256, 210, DType::kQ6_K},
    {15, "q8_K", 256, 292, std::nullopt},
    {16, "iq2_xxs", 256, 66, std::nullopt},
    {17, "iq2_xs", 256, 74, std::nullopt},
    {18, "iq3_xxs", 256, 98, std::nullopt},
    {19, "iq1_s", 256, 50, std::nullopt},
    {20, "iq4_nl", 32, 18, std::nullopt},
    {21, "iq3_s", 256, 110, std::nullopt},
    {22, "iq2_s", 256, 82, std::nullopt},
    {23, "iq4_xs", 256, 136, std::nullopt},
    {24, "i8", 1, 1, std::nullopt},
    {25, "i16", 1, 2, std::nullopt},
    {26, "i32", 1, 4, DType::kI32},
    {27, "i64", 1, 8, DType::kI64},
    {28, "f64", 1, 8, DType::kF64},
    {29, "iq1_m", 256, 56, std::nullopt},
    {30, "bf16", 1, 2, DType::kBF16},
    {34, "tq1_0", 256, 54, std::nullopt},
    {35, "tq2_0", 256, 66, std::nullopt},
    {39, "mxfp4", 32, 17, std::nullopt},
};

}  // namespace

const GgufTypeInfo* FindGgufType(uint32_t id) {
  for (const GgufTypeInfo& t : kTypes) {
    if (t.id == id) return &t;
  }
  return nullptr;
}

std::optional<uint32_t> GgufTypeForDType(DType dtype) {
  for (const GgufTypeInfo& t : kTypes) {
    if (t.dtype == dtype) return t.id;
  }
  return std::nullopt;
}

}  // namespace muninn::model
