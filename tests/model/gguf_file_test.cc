// GgufFile / GgufWriter: round trips of every metadata and tensor type, and malformed inputs
// (truncation at every byte, lying counts and lengths, overflowing dims, bad offsets, a seeded
// mutation mini-fuzz). Files are built in memory; truncated copies are exact-size heap vectors so
// that ASan catches any read past their end.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <random>

#include "muninn/model/gguf_file.h"
#include "muninn/model/gguf_format.h"
#include "muninn/model/gguf_writer.h"

namespace muninn::model {
namespace {

std::vector<uint8_t> RandomBytes(size_t n, std::mt19937& rng) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

StatusOr<std::unique_ptr<GgufFile>> ParseCopy(const std::vector<uint8_t>& bytes) {
  auto owned = std::make_shared<std::vector<uint8_t>>(bytes);
  std::span<const uint8_t> span(*owned);
  return GgufFile::Parse(span, owned, "test.gguf");
}

// A small valid file with metadata of several types and three tensors.
std::vector<uint8_t> SmallFile(uint32_t alignment = 32) {
  GgufWriter w(3, alignment);
  w.SetMetadata("general.architecture", MetadataValue::String("llama"));
  w.SetMetadata("llama.block_count", MetadataValue::U32(2));
  w.SetMetadata("llama.rope.freq_base", MetadataValue::F32(10000.0f));
  const std::vector<std::string> toks = {"a", "bc", ""};
  w.SetMetadata("tokenizer.ggml.tokens", MetadataValue::StringArray(toks));
  const std::vector<int64_t> types = {1, 2, 3};
  w.SetMetadata("tokenizer.ggml.token_type", MetadataValue::IntArray(MetadataType::kI32, types));
  std::mt19937 rng(7);
  EXPECT_TRUE(w.AddRawTensor("a", 0, Shape{2, 3}, RandomBytes(24, rng)).ok());
  EXPECT_TRUE(w.AddRawTensor("b", 3, Shape{1, 32}, RandomBytes(20, rng)).ok());
  EXPECT_TRUE(w.AddRawTensor("c", 1, Shape{5}, RandomBytes(10, rng)).ok());
  return *w.Serialize();
}

TEST(GgufFileTest, RoundTripsEveryMetadataType) {
  GgufWriter w;
  std::vector<MetadataEntry> want = {
      {"k.u8", MetadataValue::U8(250)},
      {"k.i8", MetadataValue::I8(-7)},
      {"k.u16", MetadataValue::U16(65000)},
      {"k.i16", MetadataValue::I16(-32000)},
      {"k.u32", MetadataValue::U32(4000000000u)},
      {"k.i32", MetadataValue::I32(-2000000000)},
      {"k.u64", MetadataValue::U64(std::numeric_limits<uint64_t>::max())},
      {"k.i64", MetadataValue::I64(std::numeric_limits<int64_t>::min())},
      {"k.f32", MetadataValue::F32(1.5e-5f)},
      {"k.f64", MetadataValue::F64(-2.25e300)},
      {"k.bool", MetadataValue::Bool(true)},
      {"k.string", MetadataValue::String("héllo \xf0\x9f\x98\x80")},
      {"k.empty_string", MetadataValue::String("")},
  };
  const std::vector<int64_t> ints = {-1, 0, 1, 127};
  const std::vector<double> reals = {0.5, -1.25, 3.0};
  const bool bools[] = {true, false, true};
  want.push_back({"a.u8", MetadataValue::IntArray(MetadataType::kU8, std::vector<int64_t>{1, 2})});
  want.push_back({"a.i16", MetadataValue::IntArray(MetadataType::kI16, ints)});
  want.push_back({"a.i64", MetadataValue::IntArray(MetadataType::kI64, ints)});
  want.push_back({"a.f32", MetadataValue::FloatArray(MetadataType::kF32, reals)});
  want.push_back({"a.f64", MetadataValue::FloatArray(MetadataType::kF64, reals)});
  want.push_back({"a.bool", MetadataValue::BoolArray(bools)});
  want.push_back({"a.string", MetadataValue::StringArray({"x", "", "yz"})});
  want.push_back({"a.empty", MetadataValue::StringArray({})});
  want.push_back({"a.nested", MetadataValue::ArrayOfArrays(
                                  {MetadataValue::StringArray({"p", "q"}),
                                   MetadataValue::StringArray({}),
                                   MetadataValue::IntArray(MetadataType::kI32, ints)})});
  want.push_back({"a.deep", MetadataValue::ArrayOfArrays({MetadataValue::ArrayOfArrays(
                                {MetadataValue::StringArray({"deep"})})})});
  for (const auto& e : want) w.SetMetadata(e.key, e.value);
  for (uint32_t version : {2u, 3u}) {
    GgufWriter wv(version);
    for (const auto& e : want) wv.SetMetadata(e.key, e.value);
    auto bytes = wv.Serialize();
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    auto file = ParseCopy(*bytes);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->version(), version);
    ASSERT_EQ((*file)->metadata().size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ((*file)->metadata()[i].key, want[i].key);
      EXPECT_TRUE((*file)->metadata()[i].value == want[i].value)
          << want[i].key << ": " << (*file)->metadata()[i].value.ToString() << " vs "
          << want[i].value.ToString();
    }
    EXPECT_TRUE((*file)->tensors().empty());
  }
  // Typed accessors on the parsed values.
  auto file = ParseCopy(*w.Serialize());
  ASSERT_TRUE(file.ok());
  const GgufFile& f = **file;
  EXPECT_EQ(*f.FindMetadata("k.i8")->AsInt(), -7);
  EXPECT_FALSE(f.FindMetadata("k.u64")->AsInt().ok());  // above INT64_MAX
  EXPECT_EQ(*f.FindMetadata("k.u64")->AsUint(), std::numeric_limits<uint64_t>::max());
  EXPECT_FALSE(f.FindMetadata("k.i8")->AsUint().ok());
  EXPECT_FLOAT_EQ(static_cast<float>(*f.FindMetadata("k.f32")->AsFloat()), 1.5e-5f);
  EXPECT_EQ(*f.FindMetadata("k.u32")->AsFloat(), 4000000000.0);
  EXPECT_FALSE(f.FindMetadata("k.string")->AsInt().ok());
  EXPECT_EQ(f.FindMetadata("k.bool")->AsBool().value(), true);
  EXPECT_EQ(*f.FindMetadata("a.i16")->AsIntArray(), ints);
  EXPECT_EQ((*f.FindMetadata("a.f32")->AsFloatArray())[1], -1.25f);
  EXPECT_EQ((*f.FindMetadata("a.string")->AsStringArray())[2], "yz");
  EXPECT_EQ(f.FindMetadata("a.nested")->TypeName(), "array[array[string]]");
  EXPECT_EQ((*f.FindMetadata("a.nested")->AsArrayOfArrays())[2].AsIntArray().value(), ints);
  Status wrong = f.FindMetadata("a.string")->AsIntArray().status();
  EXPECT_NE(wrong.message().find("array[string]"), std::string::npos) << wrong;
  EXPECT_EQ(f.FindMetadata("missing"), nullptr);
}

TEST(GgufFileTest, RoundTripsEveryTensorTypeAsZeroCopyViews) {
  std::mt19937 rng(42);
  const DType dtypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ4_0, DType::kQ4_1,
                          DType::kQ5_0, DType::kQ5_1, DType::kQ8_0, DType::kQ4_K, DType::kQ5_K,
                          DType::kQ6_K, DType::kI32,  DType::kI64,  DType::kF64};
  GgufWriter w;
  std::vector<std::vector<uint8_t>> payloads;
  for (DType d : dtypes) {
    const Shape shape{3, 2 * BlockSize(d)};
    auto t = Tensor::Empty(d, shape);
    ASSERT_TRUE(t.ok());
    auto bytes = RandomBytes(t->nbytes(), rng);  // blocks are opaque to the container
    std::memcpy(t->data(), bytes.data(), bytes.size());
    ASSERT_TRUE(w.AddTensor("t." + std::string(DTypeName(d)), *t).ok());
    payloads.push_back(bytes);
  }
  // A 3-d and a 4-d tensor check the dimension order.
  auto t3 = Tensor::Empty(DType::kF32, Shape{2, 3, 4});
  auto t4 = Tensor::Empty(DType::kF16, Shape{1, 2, 3, 4});
  ASSERT_TRUE(t3.ok() && t4.ok());
  ASSERT_TRUE(w.AddTensor("three", *t3).ok());
  ASSERT_TRUE(w.AddTensor("four", *t4).ok());
  EXPECT_EQ(w.AddTensor("three", *t3).code(), StatusCode::kAlreadyExists);

  auto bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok());
  auto owned = std::make_shared<std::vector<uint8_t>>(*bytes);
  auto file = GgufFile::Parse(*owned, owned, "mem");
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  ASSERT_EQ(f.tensors().size(), std::size(dtypes) + 2);
  for (size_t i = 0; i < std::size(dtypes); ++i) {
    const std::string name = "t." + std::string(DTypeName(dtypes[i]));
    const TensorInfo* info = f.FindTensor(name);
    ASSERT_NE(info, nullptr) << name;
    EXPECT_EQ(info->type_name, DTypeName(dtypes[i]));
    EXPECT_EQ(info->offset % 32, 0u);
    auto t = f.GetTensor(name);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->dtype(), dtypes[i]);
    EXPECT_EQ(t->shape(), (Shape{3, 2 * BlockSize(dtypes[i])}));
    ASSERT_EQ(t->nbytes(), payloads[i].size());
    EXPECT_EQ(std::memcmp(t->data(), payloads[i].data(), payloads[i].size()), 0) << name;
    // Zero copy: the tensor's bytes are the parsed buffer's bytes.
    EXPECT_EQ(static_cast<const uint8_t*>(t->data()), owned->data() + info->offset);
  }
  EXPECT_EQ(f.FindTensor("three")->shape, (Shape{2, 3, 4}));
  EXPECT_EQ(f.FindTensor("four")->shape, (Shape{1, 2, 3, 4}));
  EXPECT_EQ(f.GetTensor("nope").status().code(), StatusCode::kNotFound);
}

TEST(GgufFileTest, StoresDimsInnermostFirst) {
  GgufWriter w;
  std::vector<uint8_t> data(5 * 64 * 4);
  ASSERT_TRUE(w.AddRawTensor("w", 0, Shape{5, 64}, data).ok());
  auto bytes = *w.Serialize();
  // header(24) | name(8 + 1) | n_dims(4) | ne0 | ne1
  uint64_t ne0 = 0, ne1 = 0;
  std::memcpy(&ne0, bytes.data() + 24 + 9 + 4, 8);
  std::memcpy(&ne1, bytes.data() + 24 + 9 + 4 + 8, 8);
  EXPECT_EQ(ne0, 64u);
  EXPECT_EQ(ne1, 5u);
}

TEST(GgufFileTest, TypesWithoutKernelsParseButFailToLoadNamingTheType) {
  GgufWriter w;
  ASSERT_TRUE(w.AddRawTensor("iq", 16, Shape{2, 256}, std::vector<uint8_t>(2 * 66)).ok());
  auto file = ParseCopy(*w.Serialize());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors()[0].type_name, "iq2_xxs");
  EXPECT_FALSE((*file)->tensors()[0].dtype.has_value());
  Status s = (*file)->GetTensor("iq").status();
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("iq2_xxs"), std::string::npos) << s;
  EXPECT_NE(s.message().find("q4_K"), std::string::npos) << s;  // lists what would work
}

TEST(GgufFileTest, HonoursCustomAlignmentAndCopiesMisalignedTensors) {
  for (uint32_t alignment : {1u, 64u, 4096u}) {
    GgufWriter w(3, alignment);
    ASSERT_TRUE(w.AddRawTensor("odd", 24, Shape{3}, {1, 2, 3}).ok());  // i8, 3 bytes
    auto f32 = Tensor::FromVector(Shape{2}, {1.5f, -2.0f});
    ASSERT_TRUE(w.AddTensor("f", *f32).ok());
    auto file = ParseCopy(*w.Serialize());
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->alignment(), alignment);
    for (const TensorInfo& t : (*file)->tensors()) EXPECT_EQ(t.offset % alignment, 0u);
    auto t = (*file)->GetTensor("f");
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data()) % 4, 0u);
    EXPECT_EQ(t->data_as<float>()[0], 1.5f);
    EXPECT_EQ(t->data_as<float>()[1], -2.0f);
  }
}

// ---- malformed inputs ----

// Writes GGUF fields by hand so tests can lie in any of them.
class Bytes {
 public:
  Bytes& U32(uint32_t v) { return Raw(&v, 4); }
  Bytes& U64(uint64_t v) { return Raw(&v, 8); }
  Bytes& U8(uint8_t v) { return Raw(&v, 1); }
  Bytes& Str(std::string_view s) {
    U64(s.size());
    return Raw(s.data(), s.size());
  }
  Bytes& Header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    return U32(kGgufMagic).U32(version).U64(n_tensors).U64(n_kv);
  }
  Bytes& Pad(size_t alignment) {
    while (v.size() % alignment) v.push_back(0);
    return *this;
  }
  Bytes& Zeros(size_t n) {
    v.resize(v.size() + n, 0);
    return *this;
  }
  std::vector<uint8_t> v;

 private:
  Bytes& Raw(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    v.insert(v.end(), b, b + n);
    return *this;
  }
};

// One f32 tensor info with the given name, dims (innermost first), type and offset.
Bytes& TensorInfoBytes(Bytes& b, std::string_view name, std::vector<uint64_t> ne,
                       uint32_t type = 0, uint64_t offset = 0) {
  b.Str(name).U32(static_cast<uint32_t>(ne.size()));
  for (uint64_t n : ne) b.U64(n);
  return b.U32(type).U64(offset);
}

void ExpectError(const std::vector<uint8_t>& bytes, StatusCode code, std::string_view needle) {
  auto file = ParseCopy(bytes);
  ASSERT_FALSE(file.ok()) << "expected an error containing '" << needle << "'";
  EXPECT_EQ(file.status().code(), code) << file.status();
  EXPECT_NE(file.status().message().find(needle), std::string::npos) << file.status();
}

TEST(GgufFileTest, RejectsTruncationAtEveryByte) {
  const std::vector<uint8_t> full = SmallFile();
  auto ok = ParseCopy(full);
  ASSERT_TRUE(ok.ok()) << ok.status();
  uint64_t needed = 0;  // the last byte any tensor uses; trailing padding may be cut safely
  for (const TensorInfo& t : (*ok)->tensors()) needed = std::max(needed, t.offset + t.nbytes);
  for (size_t n = 0; n < needed; ++n) {
    std::vector<uint8_t> prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    auto file = ParseCopy(prefix);
    EXPECT_FALSE(file.ok()) << "a file cut to " << n << " of " << full.size() << " bytes parsed";
  }
}

TEST(GgufFileTest, RejectsBadMagicAndVersions) {
  ExpectError({}, StatusCode::kInvalidArgument, "not a GGUF file");
  ExpectError({'G', 'G', 'U'}, StatusCode::kInvalidArgument, "not a GGUF file");
  ExpectError(Bytes().U32(0x46554746).U32(3).U64(0).U64(0).v, StatusCode::kInvalidArgument,
              "not a GGUF file");
  ExpectError(Bytes().Header(0, 0, 1).v, StatusCode::kUnimplemented, "version 1");
  ExpectError(Bytes().Header(0, 0, 4).v, StatusCode::kUnimplemented, "version 4");
  ExpectError(Bytes().Header(0, 0, 0x03000000).v, StatusCode::kUnimplemented, "big-endian");
  EXPECT_TRUE(ParseCopy(Bytes().Header(0, 0, 2).v).ok());
}

TEST(GgufFileTest, RejectsHugeCountsAndLengths) {
  const uint64_t huge = std::numeric_limits<uint64_t>::max();
  ExpectError(Bytes().Header(huge, 0).v, StatusCode::kInvalidArgument, "tensor count");
  ExpectError(Bytes().Header(0, huge).v, StatusCode::kInvalidArgument, "metadata count");
  ExpectError(Bytes().Header(0, 1).U64(huge).Zeros(16).v, StatusCode::kInvalidArgument, "metadata key 0");
  ExpectError(Bytes().Header(0, 1).U64(70000).Zeros(70000).v, StatusCode::kInvalidArgument,
              "exceeds the limit");
  // A string value whose length exceeds the file.
  ExpectError(Bytes().Header(0, 1).Str("k").U32(8).U64(1000).Zeros(10).v,
              StatusCode::kInvalidArgument, "truncated");
  // Array counts beyond what the remaining bytes could hold, for every element width.
  for (uint32_t elem : {0u, 4u, 8u, 9u, 10u}) {
    ExpectError(Bytes().Header(0, 1).Str("arr").U32(9).U32(elem).U64(huge / 2).Zeros(64).v,
                StatusCode::kInvalidArgument, "declares");
  }
  // Arrays nested deeper than the cap.
  Bytes deep;
  deep.Header(0, 1).Str("deep").U32(9);
  for (int i = 0; i < 6; ++i) deep.U32(9).U64(1);
  deep.U32(0).U64(0);
  ExpectError(deep.v, StatusCode::kInvalidArgument, "nested deeper");
  // A tensor name longer than GGUF allows.
  Bytes longname;
  longname.Header(1, 0);
  TensorInfoBytes(longname, std::string(65, 'x'), {1});
  ExpectError(longname.v, StatusCode::kInvalidArgument, "exceeds the limit of 64");
}

TEST(GgufFileTest, RejectsBadTypesAndValues) {
  ExpectError(Bytes().Header(0, 1).Str("k").U32(13).U8(0).v, StatusCode::kInvalidArgument,
              "unknown value type id 13");
  ExpectError(Bytes().Header(0, 1).Str("k").U32(9).U32(77).U64(0).v,
              StatusCode::kInvalidArgument, "unknown element type id 77");
  ExpectError(Bytes().Header(0, 1).Str("k").U32(7).U8(2).v, StatusCode::kInvalidArgument,
              "expected 0 or 1");
  ExpectError(Bytes().Header(0, 1).Str("").U32(0).U8(0).v, StatusCode::kInvalidArgument,
              "empty");
  ExpectError(Bytes().Header(0, 2).Str("k").U32(0).U8(0).Str("k").U32(0).U8(1).v,
              StatusCode::kInvalidArgument, "duplicate key 'k'");
  for (uint32_t bad : {0u, 3u, 1u << 30}) {
    ExpectError(Bytes().Header(0, 1).Str("general.alignment").U32(4).U32(bad).v,
                StatusCode::kInvalidArgument, "general.alignment");
  }
  ExpectError(Bytes().Header(0, 1).Str("general.alignment").U32(8).Str("32").v,
              StatusCode::kInvalidArgument, "general.alignment");
}

TEST(GgufFileTest, RejectsBadTensorInfos) {
  auto one = [](std::vector<uint64_t> ne, uint32_t type, uint64_t offset, size_t data) {
    Bytes b;
    b.Header(1, 0);
    TensorInfoBytes(b, "t", std::move(ne), type, offset);
    return b.Pad(32).Zeros(data).v;
  };
  EXPECT_TRUE(ParseCopy(one({4, 2}, 0, 0, 32)).ok());
  ExpectError(one({}, 0, 0, 32), StatusCode::kInvalidArgument, "0 dimensions");
  ExpectError(one({1, 1, 1, 1, 1}, 0, 0, 32), StatusCode::kInvalidArgument, "5 dimensions");
  ExpectError(one({1ull << 63}, 0, 0, 32), StatusCode::kInvalidArgument, "signed 64-bit");
  ExpectError(one({1ull << 40, 1ull << 40}, 0, 0, 32), StatusCode::kInvalidArgument,
              "element count overflows");
  ExpectError(one({1ull << 62}, 0, 0, 32), StatusCode::kInvalidArgument, "byte size overflows");
  ExpectError(one({4}, 4, 0, 32), StatusCode::kInvalidArgument, "unknown ggml tensor type id 4");
  ExpectError(one({4}, 1000, 0, 32), StatusCode::kInvalidArgument, "type id 1000");
  ExpectError(one({48}, 2, 0, 64), StatusCode::kInvalidArgument, "not a multiple of the q4_0");
  ExpectError(one({4}, 0, 4, 64), StatusCode::kInvalidArgument, "not a multiple of the align");
  ExpectError(one({4, 2}, 0, 0, 31), StatusCode::kInvalidArgument, "past the end");
  ExpectError(one({4}, 0, 64, 64), StatusCode::kInvalidArgument, "past the end");
  ExpectError(one({4}, 0, (UINT64_MAX / 32) * 32, 64), StatusCode::kInvalidArgument,
              "past the end");
  // Header ends without room for the data section padding.
  Bytes b;
  b.Header(1, 0);
  TensorInfoBytes(b, "t", {0});
  ExpectError(b.v, StatusCode::kInvalidArgument, "data section");
  // Duplicate names.
  Bytes dup;
  dup.Header(2, 0);
  TensorInfoBytes(dup, "same", {4});
  TensorInfoBytes(dup, "same", {4}, 0, 32);
  ExpectError(dup.Pad(32).Zeros(64).v, StatusCode::kInvalidArgument, "duplicate tensor name");
}

TEST(GgufFileTest, RejectsTensorsWhoseBytesOverlap) {
  // Two f32 tensors "a" at data offset 0 and "b" at 32, given a's type and element count.
  auto two = [](uint32_t a_type, uint64_t a_ne, uint64_t b_offset) {
    Bytes b;
    b.Header(2, 0);
    TensorInfoBytes(b, "a", {a_ne}, a_type, 0);
    TensorInfoBytes(b, "b", {8}, 0, b_offset);
    return b.Pad(32).Zeros(128).v;
  };
  EXPECT_TRUE(ParseCopy(two(0, 8, 32)).ok());   // a = bytes 0..32, b = 32..64
  EXPECT_TRUE(ParseCopy(two(1, 16, 32)).ok());  // a as f16 x16: still 32 bytes
  // a's type changed from f16 to f32: its 64 bytes now run into b.
  ExpectError(two(0, 16, 32), StatusCode::kInvalidArgument, "overlaps tensor 'b'");
  // Both at the same offset, in either order of the tensor infos.
  ExpectError(two(0, 8, 0), StatusCode::kInvalidArgument, "overlaps");
  Bytes rev;
  rev.Header(2, 0);
  TensorInfoBytes(rev, "b", {8}, 0, 32);
  TensorInfoBytes(rev, "a", {16}, 0, 0);
  ExpectError(rev.Pad(32).Zeros(128).v, StatusCode::kInvalidArgument, "overlaps tensor 'b'");
  // An empty tensor takes no bytes and overlaps nothing.
  Bytes empty;
  empty.Header(2, 0);
  TensorInfoBytes(empty, "a", {8}, 0, 0);
  TensorInfoBytes(empty, "e", {0}, 0, 0);
  EXPECT_TRUE(ParseCopy(empty.Pad(32).Zeros(32).v).ok());
}

// Deterministic mutation fuzzing: random byte flips, inserted garbage and cut tails of a valid
// file must never crash (run under ASan/UBSan in CI); whatever parses must have readable tensors.
TEST(GgufFileTest, MutationMiniFuzz) {
  const std::vector<uint8_t> base = SmallFile();
  const uint32_t seed = 20240611;
  std::mt19937 rng(seed);
  int parsed = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> m = base;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < flips; ++i) {
      const size_t at = rng() % m.size();
      switch (rng() % 4) {
        case 0: m[at] = static_cast<uint8_t>(rng()); break;
        case 1: m[at] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 2: m[at] = (rng() % 2) ? 0xff : 0x00; break;
        default: m.resize(at + 1); break;
      }
    }
    auto file = ParseCopy(m);
    if (!file.ok()) continue;
    ++parsed;
    for (const TensorInfo& info : (*file)->tensors()) {
      auto t = (*file)->GetTensor(info);
      if (!t.ok()) continue;
      if (info.nbytes > 0) {
        const auto* p = static_cast<const volatile uint8_t*>(t->data());
        (void)p[0];
        (void)p[info.nbytes - 1];
      }
    }
  }
  // Most mutations of a small file land in data bytes or are caught; both outcomes are fine, but
  // the harness must exercise both paths.
  EXPECT_GT(parsed, 0) << "seed " << seed;
  EXPECT_LT(parsed, 3000) << "seed " << seed;
}

}  // namespace
}  // namespace muninn::model
