// The CUDA backend's decoded-weight cache (core/src/cuda/decoded_weights.h) is host logic over
// tensors, so it is checked here with host tensors standing in for device weights: a weight is
// found again while it lives, never after its buffer is gone (even at the same address), and the
// budget counts only the decodings of live weights.
#if defined(MUNINN_HAVE_CUDA)
#include "core/src/cuda/decoded_weights.h"

#include <gtest/gtest.h>

#include <memory>

namespace muninn {
namespace {

Tensor Weight(DType dtype, int64_t n, int64_t k) { return Tensor::Empty(dtype, {n, k}).value(); }

TEST(CudaDecodedWeights, KeepsADecodingPerLiveWeight) {
  cuda::DecodedWeightCache cache(/*budget_bytes=*/3 * 64 * 64 * 2);
  Tensor a = Weight(DType::kQ8_0, 64, 64), b = Weight(DType::kQ8_0, 64, 64);
  EXPECT_EQ(cache.Find(a, DType::kF16), nullptr);
  ASSERT_TRUE(cache.Fits(64 * 64 * 2));
  Tensor da = Weight(DType::kF16, 64, 64);
  cache.Insert(a, DType::kF16, da);
  const Tensor* found = cache.Find(a, DType::kF16);
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->data(), da.data());
  EXPECT_EQ(cache.Find(b, DType::kF16), nullptr);   // another weight
  EXPECT_EQ(cache.Find(a, DType::kBF16), nullptr);  // another decoding
  // A view of a's rows is another weight (other shape), not a's decoding.
  EXPECT_EQ(cache.Find(a.Slice(0, 0, 32).value(), DType::kF16), nullptr);
  cache.Insert(b, DType::kF16, Weight(DType::kF16, 64, 64));
  EXPECT_EQ(cache.used_bytes(), size_t{2 * 64 * 64 * 2});
  EXPECT_TRUE(cache.Fits(64 * 64 * 2));
  EXPECT_FALSE(cache.Fits(2 * 64 * 64 * 2));  // over the budget while a and b live
  // After a failed allocation the cache takes no more, but keeps what it has.
  cache.StopGrowing();
  EXPECT_FALSE(cache.Fits(1));
  EXPECT_NE(cache.Find(a, DType::kF16), nullptr);
}

TEST(CudaDecodedWeights, AFreedWeightIsNeverServedAndGivesItsMemoryBack) {
  cuda::DecodedWeightCache cache(/*budget_bytes=*/64 * 64 * 2);
  constexpr size_t kWeightBytes = 64 * 68;  // a q8_0 [64, 64] weight: 2 blocks of 34 bytes a row
  auto buffer = AllocateHostBuffer(2 * kWeightBytes).value();
  {
    Tensor w = Tensor::FromBuffer(buffer, 0, DType::kQ8_0, {64, 64}).value();
    cache.Insert(w, DType::kF16, Weight(DType::kF16, 64, 64));
    ASSERT_NE(cache.Find(w, DType::kF16), nullptr);
  }
  // The weight's buffer is dropped; a new buffer may come back at the same address.
  buffer.reset();
  EXPECT_EQ(cache.entries(), 1u);
  EXPECT_TRUE(cache.Fits(64 * 64 * 2));  // the dead entry is dropped first
  EXPECT_EQ(cache.entries(), 0u);
  EXPECT_EQ(cache.used_bytes(), 0u);
  // A new buffer object (possibly at the old address): its weights are new entries.
  auto again = AllocateHostBuffer(2 * kWeightBytes).value();
  Tensor w2 = Tensor::FromBuffer(again, 0, DType::kQ8_0, {64, 64}).value();
  cache.Insert(w2, DType::kF16, Weight(DType::kF16, 64, 64));
  Tensor other_view = Tensor::FromBuffer(again, kWeightBytes, DType::kQ8_0, {64, 64}).value();
  EXPECT_EQ(cache.Find(other_view, DType::kF16), nullptr);  // same buffer, other offset
  EXPECT_NE(cache.Find(w2, DType::kF16), nullptr);
}

// The stale case made certain: two buffer objects over the very same bytes, one after the other.
// The second's weight has the first's address, dtype and shape, and still misses.
TEST(CudaDecodedWeights, TheSameAddressInANewBufferMisses) {
  cuda::DecodedWeightCache cache(/*budget_bytes=*/size_t{1} << 20);
  auto memory = AllocateHostBuffer(64 * 68).value();  // outlives both wrappers
  {
    auto first = WrapHostMemory(memory->data(), memory->size(), nullptr);
    const Tensor w = Tensor::FromBuffer(first, 0, DType::kQ8_0, {64, 64}).value();
    cache.Insert(w, DType::kF16, Weight(DType::kF16, 64, 64));
    ASSERT_NE(cache.Find(w, DType::kF16), nullptr);
  }
  auto second = WrapHostMemory(memory->data(), memory->size(), nullptr);
  const Tensor w = Tensor::FromBuffer(second, 0, DType::kQ8_0, {64, 64}).value();
  EXPECT_EQ(cache.Find(w, DType::kF16), nullptr);
}

}  // namespace
}  // namespace muninn
#endif  // MUNINN_HAVE_CUDA
