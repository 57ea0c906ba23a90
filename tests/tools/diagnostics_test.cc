#include "muninn/tools/diagnostics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "retriever/device_double.h"
#include "retriever/tiny_stack.h"

namespace muninn::tools {
namespace {

using muninn::testing::ByteTokenizer;
using muninn::testing::InMemoryBank;
using muninn::testing::KeywordEmbedder;
using muninn::testing::TinyModel;
namespace tt = muninn::testing;

// The session and the passkey prompt the memory-mass tests use: retrieval at layers 1 and 3,
// chunks of 64 tokens, a 1200-token prompt with the key at depth 0.3.
retriever::LongContextOptions MassSessionOptions() {
  retriever::LongContextOptions o;
  o.memory_layer = 1;
  o.retrieval_layers = {1, 3};
  o.chunk_tokens = 64;
  o.top_k = 2;
  o.local_window = 512;
  return o;
}

MemoryMassOptions SmallMass() {
  MemoryMassOptions mo;
  mo.length = 1200;
  mo.depth = 0.3;
  mo.local_tokens = 256;
  mo.query_rows = 4;
  return mo;
}

// One 300-token passkey at depth 0.5, three answer tokens.
RetrievalHeadOptions SmallHeads() {
  RetrievalHeadOptions o;
  o.length = 300;
  o.depths = {0.5};
  o.max_answer_tokens = 3;
  return o;
}

TEST(DiagnosticsTest, LossDeltaByPositionBucketsAndAveragesOverWindows) {
  // Two windows of 6 positions; memory costs 1 nat more at positions 0-1 only.
  const std::vector<std::vector<float>> none = {{-1, -1, -2, -2, -3, -3}, {-3, -3, -2, -2, -1, -1}};
  std::vector<std::vector<float>> mem = none;
  for (auto& w : mem) w[0] -= 1, w[1] -= 1;
  auto b = LossDeltaByPosition(mem, none, 3);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_EQ(b->size(), 3u);
  EXPECT_EQ((*b)[0].first, 0);
  EXPECT_EQ((*b)[0].end, 2);
  EXPECT_EQ((*b)[2].end, 6);
  EXPECT_DOUBLE_EQ((*b)[0].nll_none, 2.0);  // mean of 1,1,3,3
  EXPECT_DOUBLE_EQ((*b)[0].delta(), 1.0);
  EXPECT_DOUBLE_EQ((*b)[1].delta(), 0.0);
  EXPECT_DOUBLE_EQ((*b)[2].nll_memory, 2.0);
  EXPECT_FALSE(LossDeltaByPosition(mem, {none[0]}, 3).ok());
  EXPECT_FALSE(LossDeltaByPosition({}, {}, 3).ok());
}

TEST(DiagnosticsTest, MassOnAndTokenSpans) {
  const std::vector<double> probs = {0.1, 0.2, 0.3, 0.4, /*head 1*/ 0.5, 0.0, 0.25, 0.25};
  const std::vector<std::pair<int64_t, int64_t>> ranges = {{0, 1}, {2, 4}};
  const auto m = MassOn(probs, 2, 4, ranges);
  EXPECT_NEAR(m[0], 0.8, 1e-12);
  EXPECT_NEAR(m[1], 1.0, 1e-12);
  auto tok = ByteTokenizer();
  const auto ids = tok->Encode("key 123 and 123.", false, false);  // one token per byte
  const auto spans = TokenSpansOf(*tok, ids, "123");
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(spans[0], (std::pair<int64_t, int64_t>{4, 7}));
  EXPECT_EQ(spans[1], (std::pair<int64_t, int64_t>{12, 15}));
}

// The recomputed attention, multiplied by Wo, must equal the forward's own attn_out, with and
// without memory, on the prompt's rows and on a row appended by a second (cached) forward.
TEST(DiagnosticsTest, RecomputedAttentionReproducesTheForwardsAttnOut) {
  auto backend = std::move(*CreateCpuBackend({}));
  auto model = TinyModel(backend.get());
  std::mt19937_64 rng(5);
  const int64_t M = 5;
  Tensor mk = tt::RandomTensor(rng, {M, tt::kHeadsKv, tt::kHd}, 1.0f);
  Tensor mv = tt::RandomTensor(rng, {M, tt::kHeadsKv, tt::kHd}, 1.0f);
  const std::vector<model::TokenId> ids = {3, 14, 15, 92, 65, 35, 89, 79, 32, 38};
  for (bool with_memory : {false, true}) {
    AttentionTrace trace(model->config(), {1, 3});
    model::MemoryKV mem;
    if (with_memory) {
      mem.layers.resize(4);
      mem.layers[3] = model::LayerMemoryKV{mk, mv};
    }
    model::KvCacheOptions kvo;
    kvo.n_ctx = 16;
    kvo.dtype = DType::kF32;
    auto cache = std::move(*model->NewKvCache(kvo));
    model::ForwardOptions fo;
    fo.memory = with_memory ? &mem : nullptr;
    fo.observer = trace.observer();
    ASSERT_TRUE(model->Forward(ids, cache.get(), fo).ok());
    const model::TokenId extra = 7;
    ASSERT_TRUE(model->Forward(std::span<const model::TokenId>(&extra, 1), cache.get(), fo).ok());
    ASSERT_EQ(trace.n_rows(), 11);
    for (int32_t layer : {1, 3}) {
      const bool mem_here = with_memory && layer == 3;
      for (int64_t row : {0, 4, 9, 10}) {
        auto probs = trace.Probabilities(*backend, layer, row, mem_here ? mk : Tensor{});
        ASSERT_TRUE(probs.ok()) << probs.status().ToString();
        auto att = trace.Output(*probs, layer, row, mem_here ? mv : Tensor{});
        ASSERT_TRUE(att.ok());
        const Tensor& w = model->weights().layers[static_cast<size_t>(layer)].wo;
        const auto ref = trace.attn_out(layer, row);
        for (int64_t o = 0; o < tt::kEmbd; ++o) {
          double acc = 0.0;
          for (int64_t c = 0; c < tt::kHeads * tt::kHd; ++c) {
            acc += static_cast<double>((*att)[static_cast<size_t>(c)]) *
                   w.data_as<float>()[o * tt::kHeads * tt::kHd + c];
          }
          EXPECT_NEAR(acc, ref[static_cast<size_t>(o)], 1e-3 * (1.0 + std::abs(ref[static_cast<size_t>(o)])))
              << "layer " << layer << " row " << row << " out " << o << " memory " << with_memory;
        }
        // Probabilities are a distribution per head.
        const int64_t n_keys = (mem_here ? M : 0) + row + 1;
        for (int64_t h = 0; h < tt::kHeads; ++h) {
          double s = 0.0;
          for (int64_t j = 0; j < n_keys; ++j) s += (*probs)[static_cast<size_t>(h * n_keys + j)];
          EXPECT_NEAR(s, 1.0, 1e-9);
        }
      }
    }
  }
}

TEST(DiagnosticsTest, MemoryMassSeesTheGoldChunkOnlyWhenItIsInMemory) {
  auto backend = std::move(*CreateCpuBackend({}));
  auto model = TinyModel(backend.get());
  auto tok = ByteTokenizer();
  auto bank = InMemoryBank(4);
  KeywordEmbedder embedder;
  auto session = std::move(*retriever::LongContextSession::Create(model.get(), tok.get(), bank.get(),
                                                                  &embedder, MassSessionOptions()));
  auto r = RunMemoryMass(*session, SmallMass());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->with_gold.size(), 2u * tt::kHeads);
  ASSERT_EQ(r->without_gold.size(), 2u * tt::kHeads);
  EXPECT_EQ(r->memory_tokens_with, r->memory_tokens_without + 64);
  for (size_t i = 0; i < r->with_gold.size(); ++i) {
    EXPECT_GT(r->with_gold[i].gold, 0.0);
    EXPECT_LE(r->with_gold[i].gold, r->with_gold[i].memory + 1e-12);
    EXPECT_LE(r->with_gold[i].memory, 1.0 + 1e-9);
    EXPECT_EQ(r->without_gold[i].gold, 0.0);
  }
  const auto j = ToJson(*r);
  EXPECT_EQ(j["with_gold"].size(), 2u);
  EXPECT_EQ(j["with_gold"][0]["memory_mass_per_head"].size(), static_cast<size_t>(tt::kHeads));
}

TEST(DiagnosticsTest, LossRunsKeepEveryWindowsLogProbsOfBothSessions) {
  auto backend = std::move(*CreateCpuBackend({}));
  auto model = TinyModel(backend.get());
  auto tok = ByteTokenizer();
  auto bank = InMemoryBank(4);
  KeywordEmbedder embedder;
  retriever::LongContextOptions o;
  o.memory_layer = 1;
  o.retrieval_layers = {1, 3};
  o.chunk_tokens = 32;
  o.top_k = 2;
  o.local_window = 256;
  auto mem = std::move(*retriever::LongContextSession::Create(model.get(), tok.get(), bank.get(),
                                                              &embedder, o));
  o.use_memory = false;
  auto plain = std::move(*retriever::LongContextSession::Create(model.get(), tok.get(), nullptr,
                                                                nullptr, o));
  std::string text;
  for (int i = 0; i < 40; ++i) text += "abc dab cab " + std::to_string(i) + ". ";
  PerplexityOptions po;
  po.seq_len = 200;
  po.scored_tokens = 64;
  po.max_windows = 2;
  auto runs = RunLossRuns(*mem, *plain, text, po);
  ASSERT_TRUE(runs.ok()) << runs.status().ToString();
  ASSERT_EQ(runs->memory.size(), 2u);
  ASSERT_EQ(runs->none.size(), 2u);
  EXPECT_EQ(runs->memory[1].size(), 63u);
  // The no-memory run is the plain session's own scoring of window 1's scored tail.
  const auto ids = tok->Encode(text, false, false);
  auto direct = plain->TokenLogProbs(std::span<const model::TokenId>(ids).subspan(200 + 136, 64), "");
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(runs->none[1], *direct);
  EXPECT_NE(runs->memory[1], runs->none[1]);  // memory was retrieved and changed the scores
  auto buckets = LossDeltaByPosition(runs->memory, runs->none, 8);
  ASSERT_TRUE(buckets.ok());
  EXPECT_EQ(buckets->size(), 8u);
}

TEST(DiagnosticsTest, RetrievalHeadsScoreEveryHeadAndRankThem) {
  auto backend = std::move(*CreateCpuBackend({}));
  auto model = TinyModel(backend.get());
  auto tok = ByteTokenizer();
  RetrievalHeadOptions o = SmallHeads();
  auto r = RunRetrievalHeads(*model, *tok, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->trials, 1);
  ASSERT_EQ(r->heads.size(), static_cast<size_t>(tt::kLayers * tt::kHeads));
  for (size_t i = 0; i < r->heads.size(); ++i) {
    EXPECT_GE(r->heads[i].key_mass, 0.0);
    EXPECT_LE(r->heads[i].key_mass, 1.0 + 1e-9);
    if (i > 0) {
      EXPECT_GE(r->heads[i - 1].copy_score, r->heads[i].copy_score);
    }
  }
  EXPECT_EQ(ToJson(*r, 5)["top_heads"].size(), 5u);
  o.depths.clear();
  EXPECT_FALSE(RunRetrievalHeads(*model, *tok, o).ok());
}

// The diagnostics on a device backend (the test double: CPU kernels behind device-only tensors):
// the traced intermediates are copied to the host, the bank's K/V are placed on the device for the
// forward, and the probabilities are recomputed on the host, so the results equal the CPU's exactly.
TEST(DiagnosticsTest, OnADeviceTheyMatchTheCpu) {
  auto cpu = std::move(*CreateCpuBackend({}));
  tt::DeviceDouble device(std::move(*CreateCpuBackend({})));
  auto cpu_model = TinyModel(cpu.get());
  auto dev_model = TinyModel(&device);
  ASSERT_EQ(dev_model->weights().layers[0].wq.device(), Device::Cuda(0));
  auto tok = ByteTokenizer();
  const RetrievalHeadOptions ho = SmallHeads();
  auto heads_cpu = RunRetrievalHeads(*cpu_model, *tok, ho);
  const int64_t downloads = device.downloads;
  auto heads_dev = RunRetrievalHeads(*dev_model, *tok, ho);
  ASSERT_TRUE(heads_cpu.ok() && heads_dev.ok()) << heads_cpu.status() << " " << heads_dev.status();
  EXPECT_GT(device.downloads, downloads);  // the intermediates came back through Transfer
  EXPECT_EQ(ToJson(*heads_dev, 1000), ToJson(*heads_cpu, 1000));

  KeywordEmbedder embedder;
  nlohmann::json mass[2];
  for (int d = 0; d < 2; ++d) {
    auto bank = InMemoryBank(4);
    auto session = std::move(*retriever::LongContextSession::Create(
        d == 0 ? cpu_model.get() : dev_model.get(), tok.get(), bank.get(), &embedder,
        MassSessionOptions()));
    auto r = RunMemoryMass(*session, SmallMass());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    mass[d] = ToJson(*r);
  }
  EXPECT_EQ(mass[1], mass[0]);

  // A trace without a backend to copy from reports the device intermediate as an error.
  AttentionTrace bare(dev_model->config(), {0});
  model::KvCacheOptions kvo;
  kvo.n_ctx = 8;
  auto cache = dev_model->NewKvCache(kvo);
  ASSERT_TRUE(cache.ok());
  model::ForwardOptions fo;
  fo.observer = bare.observer();
  const std::vector<model::TokenId> ids = {1, 2, 3};
  ASSERT_TRUE(dev_model->Forward(ids, cache->get(), fo).ok());
  EXPECT_EQ(bare.status().code(), StatusCode::kFailedPrecondition) << bare.status();
}

}  // namespace
}  // namespace muninn::tools
