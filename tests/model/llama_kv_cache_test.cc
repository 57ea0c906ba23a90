// KvCache: two-step updates, rollback, position tracking and the errors that leave it unchanged.
#include "muninn/model/kv_cache.h"

#include <vector>

#include <gtest/gtest.h>

#include "muninn/core/cpu_backend.h"

namespace muninn::model {
namespace {

class LlamaKvCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = CreateCpuBackend(CpuBackendOptions{});
    ASSERT_TRUE(b.ok());
    backend_ = std::move(b).value();
    KvCacheOptions o;
    o.n_ctx = 8;
    o.dtype = DType::kF32;
    auto c = KvCache::Create(backend_.get(), 2, 2, 4, o);
    ASSERT_TRUE(c.ok()) << c.status();
    cache_ = std::move(c).value();
  }
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<KvCache> cache_;
};

TEST_F(LlamaKvCacheTest, PrepareChangesNothingUntilApply) {
  const std::vector<TokenId> ids = {5, 6, 7};
  auto u = cache_->Prepare(ids);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->begin, 0);
  EXPECT_EQ(u->n, 3);
  EXPECT_EQ(cache_->n_past(), 0);
  Tensor k = cache_->KeySlots(1, *u);
  EXPECT_EQ(k.shape(), (Shape{3, 2, 4}));
  k.data_as<float>()[0] = 42.0f;
  cache_->Apply(*u);
  EXPECT_EQ(cache_->n_past(), 3);
  EXPECT_EQ(std::vector<TokenId>(cache_->tokens().begin(), cache_->tokens().end()), ids);
  EXPECT_EQ(cache_->Keys(1, 3).data_as<float>()[0], 42.0f);
  EXPECT_EQ(cache_->Values(0, 3).shape(), (Shape{3, 2, 4}));
  // The next reservation continues at position 3.
  const std::vector<TokenId> more = {8};
  auto u2 = cache_->Prepare(more);
  ASSERT_TRUE(u2.ok());
  EXPECT_EQ(u2->begin, 3);
  EXPECT_EQ(cache_->KeySlots(0, *u2).data(),
            static_cast<char*>(cache_->Keys(0, 8).data()) + 3 * 2 * 4 * sizeof(float));
}

TEST_F(LlamaKvCacheTest, OverflowIsResourceExhaustedAndChangesNothing) {
  const std::vector<TokenId> six(6, 1);
  auto u = cache_->Prepare(six);
  ASSERT_TRUE(u.ok());
  cache_->Apply(*u);
  const std::vector<TokenId> three(3, 2);
  auto over = cache_->Prepare(three);
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(over.status().message().find("6 of 8"), std::string::npos) << over.status();
  EXPECT_EQ(cache_->n_past(), 6);
  EXPECT_EQ(cache_->n_free(), 2);
  EXPECT_EQ(cache_->Prepare({}).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(LlamaKvCacheTest, RollbackDropsTheLastPositions) {
  const std::vector<TokenId> ids = {1, 2, 3, 4, 5};
  auto u = cache_->Prepare(ids);
  ASSERT_TRUE(u.ok());
  cache_->Apply(*u);
  EXPECT_EQ(cache_->Rollback(6).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(cache_->Rollback(-1).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(cache_->n_past(), 5);
  ASSERT_TRUE(cache_->Rollback(2).ok());
  EXPECT_EQ(cache_->n_past(), 3);
  EXPECT_EQ(std::vector<TokenId>(cache_->tokens().begin(), cache_->tokens().end()),
            (std::vector<TokenId>{1, 2, 3}));
  cache_->Clear();
  EXPECT_EQ(cache_->n_past(), 0);
  EXPECT_TRUE(cache_->tokens().empty());
}

TEST_F(LlamaKvCacheTest, AStaleUpdateIsAProgrammerError) {
  const std::vector<TokenId> ids = {1};
  auto u = cache_->Prepare(ids);
  ASSERT_TRUE(u.ok());
  auto u2 = cache_->Prepare(ids);
  ASSERT_TRUE(u2.ok());
  cache_->Apply(*u);
  EXPECT_DEATH(cache_->Apply(*u2), "stale KV update");
}

TEST_F(LlamaKvCacheTest, OptionsAndShapesAreValidated) {
  KvCacheOptions o;
  o.n_ctx = 0;
  EXPECT_EQ(KvCache::Create(backend_.get(), 1, 1, 1, o).status().code(),
            StatusCode::kInvalidArgument);
  o.n_ctx = 4;
  o.dtype = DType::kQ4_0;
  EXPECT_EQ(KvCache::Create(backend_.get(), 1, 1, 1, o).status().code(),
            StatusCode::kInvalidArgument);
  o.dtype = DType::kF16;
  EXPECT_EQ(KvCache::Create(backend_.get(), 0, 1, 1, o).status().code(),
            StatusCode::kInvalidArgument);
  auto ok = KvCache::Create(backend_.get(), 3, 2, 8, o);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ((*ok)->nbytes(), size_t{3} * 2 * 4 * 2 * 8 * 2);
  // q8_0: whole blocks of 32 per head row (34 bytes each), so the head dim must be a multiple.
  o.dtype = DType::kQ8_0;
  const auto not_blocks = KvCache::Create(backend_.get(), 3, 2, 8, o);
  EXPECT_EQ(not_blocks.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(not_blocks.status().message().find("multiple of 32"), std::string::npos);
  auto q8 = KvCache::Create(backend_.get(), 3, 2, 64, o);
  ASSERT_TRUE(q8.ok()) << q8.status();
  EXPECT_EQ((*q8)->nbytes(), size_t{3} * 2 * 4 * 2 * 2 * 34);
  EXPECT_EQ((*q8)->Keys(0, 4).dtype(), DType::kQ8_0);
}

}  // namespace
}  // namespace muninn::model
