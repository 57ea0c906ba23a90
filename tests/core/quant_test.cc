// GGUF block formats: bit-exact against gguf-py (tests/data/quant_vectors.bin, written by
// tools/reference/make_quant_vectors.py), round-trip error bounds, and argument checks.
#include "muninn/core/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "muninn/core/fp16.h"

namespace muninn {
namespace {

TEST(QuantTest, BlockStructsMatchDTypeInfo) {
  const std::map<DType, size_t> sizes = {
      {DType::kQ4_0, sizeof(BlockQ4_0)}, {DType::kQ4_1, sizeof(BlockQ4_1)},
      {DType::kQ5_0, sizeof(BlockQ5_0)}, {DType::kQ5_1, sizeof(BlockQ5_1)},
      {DType::kQ8_0, sizeof(BlockQ8_0)}, {DType::kQ8_1, sizeof(BlockQ8_1)},
      {DType::kQ4_K, sizeof(BlockQ4_K)}, {DType::kQ5_K, sizeof(BlockQ5_K)},
      {DType::kQ6_K, sizeof(BlockQ6_K)}, {DType::kQ8_K, sizeof(BlockQ8_K)}};
  for (const auto& [dtype, size] : sizes) {
    EXPECT_EQ(GetDTypeInfo(dtype).block_bytes, size) << DTypeName(dtype);
  }
}

struct Record {
  int kind;  // 0: dequantize, 1: quantize
  std::string dtype;
  std::vector<float> floats;
  std::vector<uint8_t> bytes;
};

// Parses the vector file (format in tools/reference/make_quant_vectors.py).
std::vector<Record> ReadVectors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  const std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
  size_t pos = 0;
  auto take = [&](void* dst, size_t n) {
    if (pos + n > data.size()) {
      ADD_FAILURE() << "truncated vector file at byte " << pos;
      return false;
    }
    std::memcpy(dst, data.data() + pos, n);
    pos += n;
    return true;
  };
  std::vector<Record> records;
  char magic[4];
  uint32_t version = 0, count = 0;
  if (!take(magic, 4) || std::memcmp(magic, "MQV1", 4) != 0 || !take(&version, 4) || version != 1 ||
      !take(&count, 4)) {
    ADD_FAILURE() << "bad header in " << path;
    return records;
  }
  for (uint32_t r = 0; r < count; ++r) {
    Record rec;
    uint8_t kind = 0, len = 0;
    uint32_t n = 0, nbytes = 0;
    if (!take(&kind, 1) || !take(&len, 1)) return {};
    rec.kind = kind;
    rec.dtype.resize(len);
    if (!take(rec.dtype.data(), len) || !take(&n, 4) || !take(&nbytes, 4)) return {};
    rec.floats.resize(n);
    rec.bytes.resize(nbytes);
    const bool ok = kind == 0 ? take(rec.bytes.data(), nbytes) && take(rec.floats.data(), 4u * n)
                              : take(rec.floats.data(), 4u * n) && take(rec.bytes.data(), nbytes);
    if (!ok) return {};
    records.push_back(std::move(rec));
  }
  EXPECT_EQ(pos, data.size()) << "trailing bytes in " << path;
  return records;
}

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

TEST(QuantTest, BitExactWithGgufPy) {
  const auto records =
      ReadVectors(std::string(MUNINN_SOURCE_DIR) + "/tests/data/quant_vectors.bin");
  ASSERT_FALSE(records.empty());
  std::map<std::string, int> dequant_seen, quant_seen;
  for (const Record& rec : records) {
    const auto dtype = DTypeFromName(rec.dtype);
    ASSERT_TRUE(dtype.has_value()) << rec.dtype;
    const int64_t n = static_cast<int64_t>(rec.floats.size());
    ASSERT_EQ(RowBytes(*dtype, n).value_or(0), rec.bytes.size()) << rec.dtype;
    if (rec.kind == 0) {
      std::vector<float> got(rec.floats.size());
      DequantizeRow(*dtype, rec.bytes.data(), got.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(Bits(got[i]), Bits(rec.floats[i]))
            << rec.dtype << " element " << i << ": got " << got[i] << ", gguf-py " << rec.floats[i];
      }
      ++dequant_seen[rec.dtype];
    } else {
      std::vector<uint8_t> got(rec.bytes.size());
      ASSERT_TRUE(QuantizeRow(*dtype, rec.floats.data(), got.data(), n).ok());
      const int64_t bs = BlockSize(*dtype);
      const size_t bb = GetDTypeInfo(*dtype).block_bytes;
      for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_EQ(got[i], rec.bytes[i]) << rec.dtype << " byte " << i << " (block " << i / bb
                                        << ", elements from " << (i / bb) * bs << ")";
      }
      ++quant_seen[rec.dtype];
    }
  }
  for (const char* name :
       {"f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_K", "q5_K", "q6_K"}) {
    EXPECT_GT(dequant_seen[name], 0) << "no dequantization vectors for " << name;
  }
  for (const char* name : {"f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0"}) {
    EXPECT_GT(quant_seen[name], 0) << "no quantization vectors for " << name;
  }
}

// Normalised MSE of quantize -> dequantize on Gaussian rows with per-block magnitudes.
double RoundTripNmse(DType dtype, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  const int64_t n = 8 * 256;
  std::vector<float> x(n), y(n);
  for (int64_t i = 0; i < n; ++i) x[i] = normal(rng) * (1.0f + static_cast<float>(i / 256));
  std::vector<uint8_t> q(RowBytes(dtype, n).value());
  EXPECT_TRUE(QuantizeRow(dtype, x.data(), q.data(), n).ok());
  DequantizeRow(dtype, q.data(), y.data(), n);
  double err = 0, ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    err += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    ref += double(x[i]) * x[i];
  }
  return err / ref;
}

TEST(QuantTest, RoundTripErrorBounds) {
  // Bounds: uniform rounding noise of each format on Gaussian data, with ~1.5-2x headroom.
  const std::map<DType, double> bounds = {
      {DType::kF32, 0.0},   {DType::kF16, 2e-7},  {DType::kBF16, 2e-5},   {DType::kQ8_0, 6e-5},
      {DType::kQ8_1, 6e-5}, {DType::kQ8_K, 1e-4}, {DType::kQ5_1, 2.5e-3}, {DType::kQ5_0, 3e-3},
      {DType::kQ4_1, 1e-2}, {DType::kQ4_0, 1e-2}};
  for (const auto& [dtype, bound] : bounds) {
    const double nmse = RoundTripNmse(dtype, 1234);
    EXPECT_LE(nmse, bound) << DTypeName(dtype);
    if (dtype != DType::kF32) {
      EXPECT_GT(nmse, 0.0) << DTypeName(dtype) << " lost nothing?";
    }
  }
}

TEST(QuantTest, ZeroBlocksAndQ8Sums) {
  std::vector<float> x(256, 0.0f);
  for (int i = 32; i < 64; ++i) x[i] = static_cast<float>(i) - 40.0f;
  BlockQ8_K k;
  ASSERT_TRUE(QuantizeRow(DType::kQ8_K, x.data(), &k, 256).ok());
  for (int g = 0; g < 16; ++g) {
    int s = 0;
    for (int l = 0; l < 16; ++l) s += k.qs[16 * g + l];
    EXPECT_EQ(k.bsums[g], s) << "group " << g;
  }
  BlockQ8_1 b[8];
  ASSERT_TRUE(QuantizeRow(DType::kQ8_1, x.data(), b, 256).ok());
  EXPECT_EQ(Fp16ToFp32(b[0].d), 0.0f);  // an all-zero block has scale 0 (no division by zero)
  int s = 0;
  for (int j = 0; j < 32; ++j) s += b[1].qs[j];
  // s is stored as f16: relative precision 2^-11.
  EXPECT_NEAR(Fp16ToFp32(b[1].s), Fp16ToFp32(b[1].d) * s, 1e-3 * std::fabs(Fp16ToFp32(b[1].s)));
  for (DType d : {DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0}) {
    std::vector<uint8_t> q(RowBytes(d, 256).value());
    std::vector<float> y(256, 1.0f);
    ASSERT_TRUE(QuantizeRow(d, x.data(), q.data(), 256).ok());
    DequantizeRow(d, q.data(), y.data(), 256);
    for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], 0.0f) << DTypeName(d) << " element " << i;
  }
}

TEST(QuantTest, QuantizeRowRejectsBadArguments) {
  std::vector<float> x(64, 1.0f);
  std::vector<uint8_t> out(1024);
  EXPECT_EQ(QuantizeRow(DType::kQ4_K, x.data(), out.data(), 256).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeRow(DType::kI32, x.data(), out.data(), 4).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeRow(DType::kQ4_0, x.data(), out.data(), 33).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeRow(DType::kQ8_0, x.data(), out.data(), -32).code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(QuantizeRow(DType::kQ8_0, x.data(), out.data(), 64).ok());
  EXPECT_TRUE(CanDequantize(DType::kQ6_K));
  EXPECT_FALSE(CanDequantize(DType::kI64));
  EXPECT_FALSE(CanQuantize(DType::kQ6_K));
}

TEST(QuantDeathTest, DequantizeRowChecksBlockMultiple) {
  std::vector<uint8_t> src(64);
  std::vector<float> dst(64);
  EXPECT_DEATH(DequantizeRow(DType::kQ4_0, src.data(), dst.data(), 31), "n = 31");
  EXPECT_DEATH(DequantizeRow(DType::kI32, src.data(), dst.data(), 4), "DequantizeRow");
}

}  // namespace
}  // namespace muninn
