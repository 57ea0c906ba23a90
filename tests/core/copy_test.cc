// Copy (dtype conversions, strided views) and GetRows (every table dtype) on the CPU backend.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "muninn/core/cpu_backend.h"
#include "muninn/core/fp16.h"
#include "muninn/core/quant.h"
#include "tests/core/quant_test_util.h"

namespace muninn {
namespace {

using testing::RandomMatrix;
using testing::RowAsFloat;

std::unique_ptr<Backend> MakeBackend(ThreadPool* pool = nullptr) {
  CpuBackendOptions o;
  o.pool = pool;
  return CreateCpuBackend(o).value();
}

const std::vector<DType> kTableDTypes = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ4_0,
                                         DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
                                         DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

Tensor Ids(const std::vector<int32_t>& v) {
  Tensor t = Tensor::Empty(DType::kI32, Shape{static_cast<int64_t>(v.size())}).value();
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * 4);
  return t;
}

TEST(GetRowsTest, EveryDTypeMatchesDequantizeRow) {
  ThreadPool pool(2);
  auto b = MakeBackend(&pool);
  const std::vector<int32_t> ids = {3, 0, 4, 3, 1};
  for (DType dt : kTableDTypes) {
    SCOPED_TRACE(DTypeName(dt));
    std::mt19937 rng(11 + static_cast<uint32_t>(dt));
    const Tensor table = RandomMatrix(dt, 5, 512, 256, rng);  // strided rows
    Tensor out = Tensor::Zeros(DType::kF32, Shape{5, 512 + 7}).value().Slice(1, 0, 512).value();
    ASSERT_TRUE(b->GetRows(table, Ids(ids), &out).ok());
    for (size_t t = 0; t < ids.size(); ++t) {
      const std::vector<float> want = RowAsFloat(table, ids[t]);
      const std::vector<float> got = RowAsFloat(out, static_cast<int64_t>(t));
      ASSERT_EQ(std::memcmp(want.data(), got.data(), want.size() * 4), 0) << "row " << t;
    }
  }
}

TEST(GetRowsTest, RejectsOutOfRangeIdsWithoutWriting) {
  auto b = MakeBackend();
  std::mt19937 rng(5);
  const Tensor table = RandomMatrix(DType::kQ8_0, 4, 64, 0, rng);
  for (int32_t bad : {4, -1, 1 << 30}) {
    Tensor out = Tensor::Zeros(DType::kF32, Shape{2, 64}).value();
    const Status s = b->GetRows(table, Ids({0, bad}), &out);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(std::string(s.message()).find(std::to_string(bad)), std::string::npos) << s;
    for (int i = 0; i < 128; ++i) ASSERT_EQ(out.data_as<float>()[i], 0.0f);
  }
  Tensor out = Tensor::Zeros(DType::kF32, Shape{2, 64}).value();
  Tensor f_ids = Tensor::Zeros(DType::kF32, Shape{2}).value();
  EXPECT_EQ(b->GetRows(table, f_ids, &out).code(), StatusCode::kInvalidArgument);
  Tensor out_bad = Tensor::Zeros(DType::kF32, Shape{2, 32}).value();
  EXPECT_EQ(b->GetRows(table, Ids({0, 1}), &out_bad).code(), StatusCode::kInvalidArgument);
  // i64 ids work too.
  Tensor ids64 = Tensor::Empty(DType::kI64, Shape{1}).value();
  ids64.data_as<int64_t>()[0] = 2;
  Tensor one = Tensor::Zeros(DType::kF32, Shape{1, 64}).value();
  ASSERT_TRUE(b->GetRows(table, ids64, &one).ok());
  EXPECT_EQ(RowAsFloat(one, 0), RowAsFloat(table, 2));
}

TEST(CopyTest, F32ToEveryQuantizableDTypeMatchesQuantizeRow) {
  ThreadPool pool(2);
  auto b = MakeBackend(&pool);
  std::mt19937 rng(9);
  const Tensor src = RandomMatrix(DType::kF32, 6, 256, 32, rng);  // strided rows
  for (DType dt : {DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_1,
                   DType::kQ5_0, DType::kQ5_1, DType::kQ8_1, DType::kQ8_K}) {
    SCOPED_TRACE(DTypeName(dt));
    Tensor dst = Tensor::Zeros(dt, Shape{6, 256}).value();
    ASSERT_TRUE(b->Copy(src, &dst).ok());
    const size_t row = RowBytes(dt, 256).value();
    std::vector<uint8_t> want(row);
    for (int64_t r = 0; r < 6; ++r) {
      const int64_t idx[1] = {r};
      ASSERT_TRUE(
          QuantizeRow(dt, static_cast<const float*>(src.row_ptr(idx)), want.data(), 256).ok());
      ASSERT_EQ(std::memcmp(want.data(), dst.row_ptr(idx), row), 0) << "row " << r;
    }
    // And back to f32: exactly the dequantized values.
    Tensor back = Tensor::Zeros(DType::kF32, Shape{6, 256}).value();
    ASSERT_TRUE(b->Copy(dst, &back).ok());
    for (int64_t r = 0; r < 6; ++r) EXPECT_EQ(RowAsFloat(back, r), RowAsFloat(dst, r));
  }
}

TEST(CopyTest, TransposedAndCrossFormatCopies) {
  auto b = MakeBackend();
  std::mt19937 rng(13);
  // A transposed f32 view (innermost stride != 4) into a packed f16 tensor.
  const Tensor src = RandomMatrix(DType::kF32, 8, 5, 0, rng);
  const Tensor srcT = src.Transpose(0, 1).value();  // [5, 8]
  Tensor dst = Tensor::Zeros(DType::kF16, Shape{5, 8}).value();
  ASSERT_TRUE(b->Copy(srcT, &dst).ok());
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 8; ++j) {
      const float want = src.data_as<float>()[j * 5 + i];
      EXPECT_EQ(dst.data_as<uint16_t>()[i * 8 + j], Fp32ToFp16(want)) << i << "," << j;
    }
  }
  // ... and back into a transposed f32 destination.
  Tensor back = Tensor::Zeros(DType::kF32, Shape{8, 5}).value();
  Tensor backT = back.Transpose(0, 1).value();
  ASSERT_TRUE(b->Copy(dst, &backT).ok());
  for (int i = 0; i < 40; ++i) {
    EXPECT_EQ(back.data_as<float>()[i], Fp16ToFp32(Fp32ToFp16(src.data_as<float>()[i])));
  }
  // q4_K -> bf16 goes through f32: equal to rounding the dequantized values.
  const Tensor qk = RandomMatrix(DType::kQ4_K, 3, 256, 0, rng);
  Tensor bf = Tensor::Zeros(DType::kBF16, Shape{3, 256}).value();
  ASSERT_TRUE(b->Copy(qk, &bf).ok());
  for (int64_t r = 0; r < 3; ++r) {
    const std::vector<float> f = RowAsFloat(qk, r);
    for (int j = 0; j < 256; ++j) {
      ASSERT_EQ(bf.data_as<uint16_t>()[r * 256 + j], Fp32ToBf16(f[static_cast<size_t>(j)]));
    }
  }
  // Same-dtype copy of a quantized tensor with strided rows, and of an i32 tensor.
  const Tensor q6 = RandomMatrix(DType::kQ6_K, 4, 256, 256, rng);
  Tensor q6c = Tensor::Zeros(DType::kQ6_K, Shape{4, 256}).value();
  ASSERT_TRUE(b->Copy(q6, &q6c).ok());
  for (int64_t r = 0; r < 4; ++r) EXPECT_EQ(RowAsFloat(q6c, r), RowAsFloat(q6, r));
  Tensor i = Tensor::Empty(DType::kI32, Shape{3}).value();
  for (int k = 0; k < 3; ++k) i.data_as<int32_t>()[k] = k * 7 - 3;
  Tensor i2 = Tensor::Zeros(DType::kI32, Shape{3}).value();
  ASSERT_TRUE(b->Copy(i, &i2).ok());
  EXPECT_EQ(std::memcmp(i.data(), i2.data(), 12), 0);
}

TEST(CopyTest, RejectsBadArguments) {
  auto b = MakeBackend();
  std::mt19937 rng(17);
  const Tensor src = RandomMatrix(DType::kF32, 2, 256, 0, rng);
  Tensor q4k = Tensor::Zeros(DType::kQ4_K, Shape{2, 256}).value();
  EXPECT_EQ(b->Copy(src, &q4k).code(), StatusCode::kInvalidArgument);  // no q4_K quantizer
  Tensor shape = Tensor::Zeros(DType::kF32, Shape{2, 128}).value();
  EXPECT_EQ(b->Copy(src, &shape).code(), StatusCode::kInvalidArgument);
  Tensor i32 = Tensor::Zeros(DType::kI32, Shape{2, 256}).value();
  EXPECT_EQ(b->Copy(src, &i32).code(), StatusCode::kInvalidArgument);
  // Overlapping but different views of one buffer.
  Tensor big = Tensor::Zeros(DType::kF32, Shape{3, 256}).value();
  const Tensor a = big.Slice(0, 0, 2).value();
  Tensor c = big.Slice(0, 1, 3).value();
  EXPECT_EQ(b->Copy(a, &c).code(), StatusCode::kInvalidArgument);
  // Copying a view onto itself is a no-op.
  Tensor same = a;
  EXPECT_TRUE(b->Copy(a, &same).ok());
  EXPECT_EQ(b->Copy(src, nullptr).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace muninn
