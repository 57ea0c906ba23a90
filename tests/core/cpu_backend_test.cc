#include "muninn/core/cpu_backend.h"

#include <gtest/gtest.h>

namespace muninn {
namespace {

TEST(CpuBackendTest, RejectsIsaBeyondCpu) {
  CpuBackendOptions o;
  o.isa = CpuIsa::kScalar;
  EXPECT_TRUE(CreateCpuBackend(o).ok());
  if (GetCpuFeatures().BestIsa() != CpuIsa::kAvx512) {
    o.isa = CpuIsa::kAvx512;
    EXPECT_EQ(CreateCpuBackend(o).status().code(), StatusCode::kInvalidArgument);
  }
}

TEST(CpuBackendTest, SupportsOpAndTransfer) {
  auto b = *CreateCpuBackend({});
  EXPECT_EQ(b->device(), Device::Cpu());
  EXPECT_TRUE(b->SupportsOp({OpKind::kMatMul, DType::kQ4_K}));
  EXPECT_FALSE(b->SupportsOp({OpKind::kMatMul, DType::kI32}));
  EXPECT_FALSE(b->SupportsOp({OpKind::kRmsNorm, DType::kF16}));
  auto src = *Tensor::FromVector({2, 2}, {1, 2, 3, 4});
  auto dst = *b->Allocate(DType::kF32, {2, 2});
  ASSERT_TRUE(b->Transfer(src, &dst).ok());
  EXPECT_EQ(dst.data_as<float>()[3], 4.0f);
  auto wrong = *b->Allocate(DType::kF32, {4});
  EXPECT_EQ(b->Transfer(src, &wrong).code(), StatusCode::kInvalidArgument);
  // Undefined tensors and a null destination are errors, not reads of nothing.
  Tensor undefined;
  EXPECT_EQ(b->Transfer(src, &undefined).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(b->Transfer(undefined, &dst).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(b->Transfer(src, nullptr).code(), StatusCode::kInvalidArgument);
  // CopyToHost: a packed copy, not a view of the source.
  auto strided = *src.Slice(1, 1, 2);  // column 1: [2, 1] with a row stride of 2 floats
  auto copy = CopyToHost(*b, strided);
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_TRUE(copy->is_contiguous());
  EXPECT_NE(copy->data(), strided.data());
  EXPECT_EQ(copy->data_as<float>()[0], 2.0f);
  EXPECT_EQ(copy->data_as<float>()[1], 4.0f);
  // OnHost: a packed host tensor itself (no copy); a strided view packed, as CopyToHost does.
  auto same = OnHost(*b, src);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->data(), src.data());
  auto packed = OnHost(*b, strided);
  ASSERT_TRUE(packed.ok()) << packed.status();
  EXPECT_TRUE(packed->is_contiguous());
  EXPECT_EQ(packed->data_as<float>()[1], 4.0f);
  EXPECT_TRUE(b->Synchronize().ok());
}

TEST(CpuFeaturesTest, IsaNamesParse) {
  for (CpuIsa isa : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    CpuIsa parsed;
    ASSERT_TRUE(ParseCpuIsa(CpuIsaName(isa), &parsed));
    EXPECT_EQ(parsed, isa);
  }
  CpuIsa dummy;
  EXPECT_FALSE(ParseCpuIsa("sse9", &dummy));
  EXPECT_FALSE(GetCpuFeatures().ToString().empty());
}

}  // namespace
}  // namespace muninn
