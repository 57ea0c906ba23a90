// SafetensorsFile / SafetensorsWriter: round trips and malformed headers, truncation at every
// byte, and a seeded mutation mini-fuzz.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "muninn/core/fp16.h"
#include "muninn/model/safetensors_file.h"
#include "muninn/model/safetensors_writer.h"

namespace muninn::model {
namespace {

StatusOr<std::unique_ptr<SafetensorsFile>> ParseCopy(const std::vector<uint8_t>& bytes) {
  auto owned = std::make_shared<std::vector<uint8_t>>(bytes);
  std::span<const uint8_t> span(*owned);
  return SafetensorsFile::Parse(span, owned, "test.safetensors");
}

// A file from a raw header string and `data_bytes` zero bytes of data.
std::vector<uint8_t> WithHeader(const std::string& json, size_t data_bytes) {
  std::vector<uint8_t> out(8 + json.size() + data_bytes, 0);
  const uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  if (!json.empty()) std::memcpy(out.data() + 8, json.data(), json.size());
  return out;
}

void ExpectError(const std::vector<uint8_t>& bytes, std::string_view needle,
                 StatusCode code = StatusCode::kInvalidArgument) {
  auto file = ParseCopy(bytes);
  ASSERT_FALSE(file.ok()) << "expected an error containing '" << needle << "'";
  EXPECT_EQ(file.status().code(), code) << file.status();
  EXPECT_NE(file.status().message().find(needle), std::string::npos) << file.status();
}

std::vector<uint8_t> SmallFile() {
  SafetensorsWriter w;
  w.SetMetadata("format", "pt");
  auto a = Tensor::FromVector(Shape{2, 3}, {1, 2, 3, 4, 5, 6});
  EXPECT_TRUE(w.AddTensor("a.weight", *a).ok());
  auto h = Tensor::Empty(DType::kF16, Shape{3});
  for (int i = 0; i < 3; ++i) h->data_as<uint16_t>()[i] = Fp32ToFp16(0.5f * static_cast<float>(i));
  EXPECT_TRUE(w.AddTensor("h", *h).ok());
  EXPECT_TRUE(w.AddRawTensor("ids", "I64", {1, 2}, std::vector<uint8_t>(16, 1)).ok());
  return *w.Serialize();
}

TEST(SafetensorsFileTest, RoundTripsF32F16Bf16AsViews) {
  std::mt19937 rng(3);
  SafetensorsWriter w;
  w.SetMetadata("format", "pt");
  std::vector<float> vals(4 * 5);
  for (auto& v : vals) v = std::uniform_real_distribution<float>(-1, 1)(rng);
  auto f32 = Tensor::FromVector(Shape{4, 5}, vals);
  auto f16 = Tensor::Empty(DType::kF16, Shape{2, 2, 5});
  auto bf16 = Tensor::Empty(DType::kBF16, Shape{1, 1, 4, 5});
  for (size_t i = 0; i < vals.size(); ++i) {
    f16->data_as<uint16_t>()[i] = Fp32ToFp16(vals[i]);
    bf16->data_as<uint16_t>()[i] = Fp32ToBf16(vals[i]);
  }
  ASSERT_TRUE(w.AddTensor("x.f32", *f32).ok());
  ASSERT_TRUE(w.AddTensor("x.f16", *f16).ok());
  ASSERT_TRUE(w.AddTensor("x.bf16", *bf16).ok());
  auto scalar = Tensor::Empty(DType::kF32, Shape{});
  *scalar->data_as<float>() = 7.0f;
  ASSERT_TRUE(w.AddTensor("scalar", *scalar).ok());
  EXPECT_EQ(w.AddTensor("x.f32", *f32).code(), StatusCode::kAlreadyExists);
  auto bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok());
  auto owned = std::make_shared<std::vector<uint8_t>>(*bytes);
  auto file = SafetensorsFile::Parse(*owned, owned, "m");
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;
  EXPECT_EQ(f.data_offset() % 8, 0u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  ASSERT_EQ(f.tensors().size(), 4u);
  auto t = f.GetTensor("x.f32");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->shape(), (Shape{4, 5}));
  EXPECT_EQ(std::memcmp(t->data(), vals.data(), vals.size() * 4), 0);
  EXPECT_EQ(static_cast<const uint8_t*>(t->data()), owned->data() + f.FindTensor("x.f32")->offset);
  auto h = f.GetTensor("x.f16");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->dtype(), DType::kF16);
  EXPECT_EQ(h->shape(), (Shape{2, 2, 5}));
  EXPECT_EQ(std::memcmp(h->data(), f16->data(), 40), 0);
  auto b = f.GetTensor("x.bf16");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->dtype(), DType::kBF16);
  EXPECT_EQ(std::memcmp(b->data(), bf16->data(), 40), 0);
  auto s = f.GetTensor("scalar");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->ndim(), 0);
  EXPECT_EQ(*s->data_as<float>(), 7.0f);
  EXPECT_EQ(f.GetTensor("missing").status().code(), StatusCode::kNotFound);
}

TEST(SafetensorsFileTest, OtherDtypesParseButFailToLoad) {
  auto file = ParseCopy(SmallFile());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->FindTensor("ids")->type_name, "i64");
  Status s = (*file)->GetTensor("ids").status();
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("i64"), std::string::npos) << s;
}

TEST(SafetensorsFileTest, CopiesMisalignedTensors) {
  // A header of odd length puts the f32 data at an odd address; the reader must copy it.
  const std::string json = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  auto bytes = WithHeader(json, 0);
  const float v[2] = {1.25f, -3.0f};
  bytes.insert(bytes.end(), reinterpret_cast<const uint8_t*>(v),
               reinterpret_cast<const uint8_t*>(v) + 8);
  auto file = ParseCopy(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  auto t = (*file)->GetTensor("t");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data()) % 4, 0u);
  EXPECT_EQ(t->data_as<float>()[0], 1.25f);
  EXPECT_EQ(t->data_as<float>()[1], -3.0f);
}

TEST(SafetensorsFileTest, RejectsMalformedHeaders) {
  ExpectError({}, "too short");
  ExpectError({1, 2, 3}, "too short");
  std::vector<uint8_t> huge(16, 0xff);
  ExpectError(huge, "exceeds the file");
  ExpectError(WithHeader("{not json", 0), "not valid JSON");
  ExpectError(WithHeader("[1,2]", 0), "not a JSON object");
  ExpectError(WithHeader(R"({"t": 5})", 0), "not a JSON object");
  ExpectError(WithHeader(R"({"t":{"shape":[1],"data_offsets":[0,4]}})", 4), "'dtype'");
  ExpectError(WithHeader(R"({"t":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", 4),
              "unknown dtype 'F33'");
  ExpectError(WithHeader(R"({"t":{"dtype":"F32","data_offsets":[0,4]}})", 4), "'shape'");
  ExpectError(WithHeader(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
              "non-negative");
  ExpectError(WithHeader(R"({"t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4),
              "non-negative");
  ExpectError(WithHeader(R"({"t":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}})", 4),
              "9 dimensions");
  ExpectError(WithHeader(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],)"
                         R"("data_offsets":[0,4]}})", 4),
              "overflows");
  ExpectError(WithHeader(R"({"t":{"dtype":"F64","shape":[2305843009213693952],)"
                         R"("data_offsets":[0,4]}})", 4),
              "overflows");
  ExpectError(WithHeader(R"({"t":{"dtype":"F32","shape":[1]}})", 4), "data_offsets");
  ExpectError(WithHeader(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4),
              "data_offsets");
  ExpectError(WithHeader(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4),
              "outside");
  ExpectError(WithHeader(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}})", 4),
              "outside");
  ExpectError(WithHeader(R"({"t":{"dtype":"F32","shape":[1],)"
                         R"("data_offsets":[0,18446744073709551615]}})", 4),
              "non-negative");
  ExpectError(WithHeader(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 8),
              "needs 8 bytes");
  ExpectError(WithHeader(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                         R"("t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4),
              "duplicate key 't'");
  ExpectError(WithHeader(R"({"__metadata__":{"a":1}})", 0), "not a string");
  ExpectError(WithHeader(std::string(100, '[') + std::string(100, ']'), 0), "nested too deeply");
  EXPECT_TRUE(ParseCopy(WithHeader("{}", 0)).ok());
}

TEST(SafetensorsFileTest, FiveDimensionalTensorsAreSkippedNotFatal) {
  // The layout of Huginn's persistent RoPE buffer: [1, T, 1, head_dim / 2, 2] f32.
  auto file = ParseCopy(WithHeader(
      R"({"freqs_cis":{"dtype":"F32","shape":[1,2,1,2,2],"data_offsets":[0,32]},)"
      R"("w":{"dtype":"F32","shape":[2],"data_offsets":[32,40]}})",
      40));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), 1u);
  EXPECT_EQ((*file)->tensors()[0].name, "w");
  ASSERT_EQ((*file)->skipped_tensors().size(), 1u);
  EXPECT_EQ((*file)->skipped_tensors()[0].dims, (std::vector<int64_t>{1, 2, 1, 2, 2}));
  EXPECT_EQ((*file)->FindTensor("freqs_cis"), nullptr);
  Status s = (*file)->GetTensor("freqs_cis").status();
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("5 dimensions"), std::string::npos) << s;
  EXPECT_TRUE((*file)->GetTensor("w").ok());
  // A skipped tensor's bytes are still checked against the data section and the others.
  ExpectError(WithHeader(R"({"f":{"dtype":"F32","shape":[1,2,1,2,2],"data_offsets":[0,32]}})", 16),
              "outside");
  ExpectError(WithHeader(R"({"f":{"dtype":"F32","shape":[1,2,1,2,2],"data_offsets":[0,32]},)"
                         R"("w":{"dtype":"F32","shape":[2],"data_offsets":[24,32]}})",
                         32),
              "overlaps");
}

TEST(SafetensorsFileTest, RejectsTensorsWhoseBytesOverlap) {
  EXPECT_TRUE(ParseCopy(WithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                   R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                   16))
                  .ok());
  // "a" was F16 [4] at bytes 0..8 and became F32 [4]: it now runs into "b".
  ExpectError(WithHeader(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                         16),
              "overlaps tensor 'b'");
  ExpectError(WithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                         16),
              "overlaps");
  // Empty tensors take no bytes.
  EXPECT_TRUE(ParseCopy(WithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                   R"("e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})",
                                   8))
                  .ok());
}

TEST(SafetensorsFileTest, RejectsTruncationAtEveryByte) {
  const std::vector<uint8_t> full = SmallFile();
  ASSERT_TRUE(ParseCopy(full).ok());
  for (size_t n = 0; n < full.size(); ++n) {
    std::vector<uint8_t> prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_FALSE(ParseCopy(prefix).ok()) << "cut to " << n << " of " << full.size() << " bytes";
  }
}

TEST(SafetensorsFileTest, MutationMiniFuzz) {
  const std::vector<uint8_t> base = SmallFile();
  const uint32_t seed = 99173;
  std::mt19937 rng(seed);
  int parsed = 0;
  const char interesting[] = "{}[]\",:0123456789-e.\\ ";
  for (int iter = 0; iter < 2000; ++iter) {
    std::vector<uint8_t> m = base;
    const int flips = 1 + static_cast<int>(rng() % 6);
    for (int i = 0; i < flips; ++i) {
      const size_t at = rng() % m.size();
      switch (rng() % 4) {
        case 0: m[at] = static_cast<uint8_t>(rng()); break;
        case 1: m[at] = static_cast<uint8_t>(interesting[rng() % (sizeof(interesting) - 1)]); break;
        case 2: m[at] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        default: m.resize(at + 1); break;
      }
    }
    auto file = ParseCopy(m);
    if (!file.ok()) continue;
    ++parsed;
    for (const TensorInfo& info : (*file)->tensors()) {
      auto t = (*file)->GetTensor(info);
      if (t.ok() && info.nbytes > 0) {
        const auto* p = static_cast<const volatile uint8_t*>(t->data());
        (void)p[0];
        (void)p[info.nbytes - 1];
      }
    }
  }
  EXPECT_GT(parsed, 0) << "seed " << seed;
  EXPECT_LT(parsed, 2000) << "seed " << seed;
}

}  // namespace
}  // namespace muninn::model
