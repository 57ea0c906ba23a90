#include "muninn/core/tensor.h"

#include <gtest/gtest.h>

#include <cstring>

namespace muninn {
namespace {

TEST(ShapeTest, Basics) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.ndim(), 3);
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.ToString(), "[2, 3, 4]");
  EXPECT_TRUE((Shape{2, 3, 4} == s));
  EXPECT_FALSE((Shape{2, 3} == s));
  EXPECT_EQ(Shape{}.numel(), 1);
}

TEST(TensorTest, EmptyIsContiguousAndAligned) {
  auto t = Tensor::Empty(DType::kF32, {3, 5});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(t->is_contiguous());
  EXPECT_EQ(t->stride(0), 20);
  EXPECT_EQ(t->stride(1), 4);
  EXPECT_EQ(t->nbytes(), 60u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data()) % 64, 0u);
  EXPECT_EQ(t->num_rows(), 3);
}

TEST(TensorTest, QuantizedStridesArePerBlock) {
  auto t = Tensor::Empty(DType::kQ4_0, {4, 64});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->stride(1), 18);      // one block
  EXPECT_EQ(t->stride(0), 2 * 18);  // two blocks per row
  EXPECT_EQ(t->nbytes(), 4u * 36u);
  // Innermost dim must be block-aligned.
  EXPECT_EQ(Tensor::Empty(DType::kQ4_0, {4, 33}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Tensor::Empty(DType::kQ6_K, {1, 128}).status().code(), StatusCode::kInvalidArgument);
}

TEST(TensorTest, RejectsBadShapes) {
  EXPECT_FALSE(Tensor::Empty(DType::kF32, {-1, 3}).ok());
  EXPECT_FALSE(Tensor::Empty(DType::kF32, {int64_t{1} << 40, int64_t{1} << 40}).ok());
}

TEST(TensorTest, ZerosAndFromVector) {
  auto z = Tensor::Zeros(DType::kF16, {7});
  ASSERT_TRUE(z.ok());
  for (int i = 0; i < 7; ++i) EXPECT_EQ(z->data_as<uint16_t>()[i], 0);
  auto v = Tensor::FromVector({2, 2}, {1, 2, 3, 4});
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->data_as<float>()[3], 4.0f);
  EXPECT_FALSE(Tensor::FromVector({2, 3}, {1, 2}).ok());
}

TEST(TensorTest, SliceTransposeSelectReshape) {
  std::vector<float> vals(24);
  for (int i = 0; i < 24; ++i) vals[static_cast<size_t>(i)] = static_cast<float>(i);
  auto t = *Tensor::FromVector({2, 3, 4}, vals);

  auto s = t.Slice(2, 1, 3);
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->is_contiguous());
  EXPECT_EQ(s->dim(2), 2);
  EXPECT_EQ(*static_cast<float*>(s->row_ptr(std::vector<int64_t>{1, 2})), 21.0f);

  auto tr = t.Transpose(0, 1);
  ASSERT_TRUE(tr.ok());
  EXPECT_EQ(tr->dim(0), 3);
  EXPECT_EQ(tr->stride(0), 16);
  auto c = tr->Contiguous();
  ASSERT_TRUE(c.ok());
  // c[1][1][:] == t[1][1][:] == 16..19
  EXPECT_EQ(static_cast<float*>(c->row_ptr(std::vector<int64_t>{1, 1}))[0], 16.0f);

  auto sel = t.Select(1);
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(sel->ndim(), 2);
  EXPECT_EQ(sel->data_as<float>()[0], 12.0f);
  EXPECT_EQ(t.Select(2).status().code(), StatusCode::kOutOfRange);

  auto r = t.Reshape({6, 4});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->data_as<float>()[23], 23.0f);
  EXPECT_FALSE(t.Reshape({5, 5}).ok());
  EXPECT_FALSE(s->Reshape({2, 6}).ok());  // not contiguous

  EXPECT_EQ(t.Slice(1, 2, 4).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(t.Slice(5, 0, 1).status().code(), StatusCode::kInvalidArgument);
}

TEST(TensorTest, QuantizedSliceMustBeBlockAligned) {
  auto t = *Tensor::Zeros(DType::kQ8_0, {2, 128});
  EXPECT_TRUE(t.Slice(1, 32, 96).ok());
  EXPECT_FALSE(t.Slice(1, 1, 33).ok());
  EXPECT_FALSE(t.Transpose(0, 1).ok());
}

TEST(TensorTest, FromBufferChecksBounds) {
  auto buf = *AllocateHostBuffer(100);
  EXPECT_TRUE(Tensor::FromBuffer(buf, 0, DType::kF32, {5, 5}).ok());
  EXPECT_EQ(Tensor::FromBuffer(buf, 4, DType::kF32, {5, 5}).status().code(), StatusCode::kOutOfRange);
  std::vector<int64_t> strides = {40, 4};
  EXPECT_TRUE(Tensor::FromBufferStrided(buf, 0, DType::kF32, {2, 10}, strides).ok());
  EXPECT_FALSE(Tensor::FromBufferStrided(buf, 0, DType::kF32, {3, 10}, strides).ok());
  std::vector<int64_t> huge = {int64_t{1} << 62, 4};
  EXPECT_FALSE(Tensor::FromBufferStrided(buf, 0, DType::kF32, {5, 1}, huge).ok());
  EXPECT_FALSE(Tensor::FromBuffer(nullptr, 0, DType::kF32, {1}).ok());
  // Zero-size views are fine anywhere inside the buffer.
  EXPECT_TRUE(Tensor::FromBuffer(buf, 100, DType::kF32, {0, 4}).ok());
}

TEST(TensorTest, WrapHostMemoryKeepsOwnerAlive) {
  auto owner = std::make_shared<std::vector<float>>(std::vector<float>{1, 2, 3});
  std::weak_ptr<std::vector<float>> weak = owner;
  Tensor t;
  {
    auto buf = WrapHostMemory(owner->data(), 12, owner);
    owner.reset();
    t = *Tensor::FromBuffer(buf, 0, DType::kF32, {3});
  }
  EXPECT_FALSE(weak.expired());
  EXPECT_EQ(t.data_as<float>()[2], 3.0f);
  t = Tensor();
  EXPECT_TRUE(weak.expired());
}

TEST(TensorTest, SameViewNeedsTheSameElementsInTheSameOrder) {
  const Tensor t = Tensor::Zeros(DType::kF32, Shape{4, 6}).value();
  EXPECT_TRUE(SameView(t, t));
  EXPECT_TRUE(SameView(t.Slice(0, 1, 3).value(), t.Slice(0, 1, 3).value()));
  EXPECT_FALSE(SameView(t.Slice(0, 1, 3).value(), t.Slice(0, 2, 4).value()));  // other rows
  EXPECT_FALSE(SameView(t, t.Reshape(Shape{6, 4}).value()));                   // other shape
  const Tensor tt = t.Transpose(0, 1).value();
  EXPECT_FALSE(SameView(tt, t.Reshape(Shape{6, 4}).value()));  // same shape, other strides
  EXPECT_FALSE(SameView(t.Slice(1, 0, 4).value(), t.Slice(1, 2, 6).value()));  // other columns
  const Tensor copy = t.Contiguous().value();
  EXPECT_FALSE(SameView(t, copy));  // equal values, other bytes
}

TEST(DTypeTest, InfoAndRowBytes) {
  EXPECT_EQ(DTypeName(DType::kQ4_K), "q4_K");
  EXPECT_EQ(*DTypeFromName("q6_K"), DType::kQ6_K);
  EXPECT_FALSE(DTypeFromName("q3_K").has_value());
  EXPECT_EQ(*RowBytes(DType::kQ4_K, 512), 288u);
  EXPECT_EQ(*RowBytes(DType::kQ6_K, 256), 210u);
  EXPECT_EQ(*RowBytes(DType::kF16, 3), 6u);
  EXPECT_FALSE(RowBytes(DType::kQ8_0, 31).has_value());
  EXPECT_FALSE(RowBytes(DType::kF32, -1).has_value());
  EXPECT_FALSE(RowBytes(DType::kF64, int64_t{1} << 62).has_value());
}

}  // namespace
}  // namespace muninn
