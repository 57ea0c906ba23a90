#include "memory/src/codec.h"

#include <gtest/gtest.h>

#include <random>

#include "memory/src/crc32c.h"
#include "memory/src/eviction.h"

namespace muninn::memory::internal {
namespace {

TEST(MemoryCodecTest, Crc32cKnownValue) {
  // The standard CRC-32C check value of "123456789".
  EXPECT_EQ(Crc32c(0, "123456789", 9), 0xE3069283u);
  // Incremental equals one-shot.
  EXPECT_EQ(Crc32c(Crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

TEST(MemoryCodecTest, IdKeysSortChronologically) {
  EXPECT_LT(IdKey(255), IdKey(256));
  EXPECT_LT(IdKey(1), IdKey(uint64_t{1} << 40));
  EXPECT_EQ(ParseIdKey(IdKey(123456789)).value(), 123456789u);
  EXPECT_FALSE(ParseIdKey("short").ok());
  EXPECT_EQ(DocKey(5, 9).substr(0, 8), DocPrefix(5));
}

TEST(MemoryCodecTest, EveryValueRejectsEveryTruncationAndBitFlip) {
  BankHeader h;
  h.dim = 384;
  h.n_head_kv = 8;
  h.head_dim = 64;
  h.kv_dtype = DType::kQ8_0;
  h.index_factory = "HNSW32";
  RecordValue rv{3, 128, 128, 7, 1000, 600};
  std::vector<int32_t> tokens = {1, 2, 3};
  std::vector<float> emb = {0.5f, -1.0f, 2.0f};
  auto k = Tensor::FromVector(Shape{1, 2, 32}, std::vector<float>(64, 0.25f)).value();
  const std::string kv = EncodeKv(DType::kQ8_0, k, k).value();
  const std::vector<std::pair<std::string, std::function<bool(std::string_view)>>> cases = {
      {EncodeBankHeader(h), [](std::string_view b) { return DecodeBankHeader(b).ok(); }},
      {EncodeBankState({4, 5, 6}), [](std::string_view b) { return DecodeBankState(b).ok(); }},
      {EncodeRecord(rv), [](std::string_view b) { return DecodeRecord(b).ok(); }},
      {EncodeContent(tokens, "hello"),
       [](std::string_view b) {
         std::vector<int32_t> t;
         std::string s;
         return DecodeContent(b, &t, &s).ok();
       }},
      {EncodeEmbedding(emb),
       [](std::string_view b) {
         float out[3];
         return DecodeEmbedding(b, 3, out).ok();
       }},
      {kv, [](std::string_view b) { return VerifyKv(b).ok(); }},
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    const auto& [bytes, decode] = cases[c];
    ASSERT_TRUE(decode(bytes)) << "case " << c;
    for (size_t n = 0; n < bytes.size(); ++n) {
      ASSERT_FALSE(decode(std::string_view(bytes).substr(0, n))) << "case " << c << " len " << n;
    }
    for (size_t i = 0; i < bytes.size(); ++i) {
      std::string bad = bytes;
      bad[i] = static_cast<char>(bad[i] ^ 0x10);
      ASSERT_FALSE(decode(bad)) << "case " << c << " flipped byte " << i;
    }
  }
  auto dh = DecodeBankHeader(EncodeBankHeader(h)).value();
  EXPECT_EQ(dh.index_factory, "HNSW32");
  EXPECT_EQ(dh.kv_dtype, DType::kQ8_0);
  auto drv = DecodeRecord(EncodeRecord(rv)).value();
  EXPECT_EQ(drv.retrieval_count, 7u);
  EXPECT_EQ(drv.position, 128);
  EXPECT_EQ(DecodeEmbedding(EncodeEmbedding(emb), 4, nullptr).code(), StatusCode::kDataLoss);
}

TEST(MemoryCodecTest, KvRejectsShapesThatDoNotFitTheDType) {
  auto k = Tensor::FromVector(Shape{1, 1, 16}, std::vector<float>(16, 1.0f)).value();
  EXPECT_EQ(EncodeKv(DType::kQ8_0, k, k).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(EncodeKv(DType::kF16, k, k).ok());
  auto v = Tensor::FromVector(Shape{1, 2, 8}, std::vector<float>(16, 1.0f)).value();
  EXPECT_EQ(EncodeKv(DType::kF16, k, v).status().code(), StatusCode::kInvalidArgument);
}

TEST(MemoryEvictionTest, FrequencyRoundBandsAndTies) {
  std::vector<EvictionCandidate> c;
  const uint32_t counts[20] = {9, 0, 0, 5, 1, 0, 2, 0, 0, 3, 0, 1, 0, 0, 4, 0, 0, 0, 0, 0};
  for (uint64_t i = 0; i < 20; ++i) c.push_back({i + 1, 1, 1, counts[i]});
  FrequencyEvictionParams p;  // lower 10 (2 chunks), upper 90 (2 protected), target 10
  auto ids = PlanFrequencyRound(c, p);
  // 1, 2 by age; then count-0 chunks of the middle (ids 3..18), oldest first: 3 6 8 9 11 13 14 16.
  EXPECT_EQ(ids, (std::vector<uint64_t>{1, 2, 3, 6, 8, 9, 11, 13, 14, 16}));
  p.whole_tie_groups = true;  // every count-0 middle chunk goes: 3 6 8 9 11 13 14 16 17 18
  ids = PlanFrequencyRound(c, p);
  EXPECT_EQ(ids.size(), 12u);
  EXPECT_EQ(ids.back(), 18u);
  // The protected newest (19, 20) never go, even though their counts are 0.
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 19u) + std::count(ids.begin(), ids.end(), 20u), 0);
}

TEST(MemoryEvictionTest, PlanStopsWhenItFits) {
  std::vector<EvictionCandidate> c;
  for (uint64_t i = 0; i < 8; ++i) c.push_back({i + 1, 10, 100, 0});
  auto none = PlanEviction(c, {100, 0}, 10, 100, EvictionPolicy::kFrequency, {});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  auto fifo = PlanEviction(c, {80, 0}, 10, 100, EvictionPolicy::kFifoHalf, {});
  EXPECT_EQ(*fifo, (std::vector<uint64_t>{1, 2, 3, 4}));
  // Bytes bind: 800 + 450 > 1000 needs more than the first halving round.
  auto freq = PlanEviction(c, {0, 1000}, 10, 450, EvictionPolicy::kFrequency, {});
  ASSERT_TRUE(freq.ok());
  EXPECT_EQ(freq->size(), 4u);
  EXPECT_EQ(PlanEviction(c, {80, 0}, 90, 0, EvictionPolicy::kFifoHalf, {}).status().code(),
            StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace muninn::memory::internal
