// The kNN-LM memory mode in LongContextSession: ingest stores final normed states and next
// tokens; TokenLogProbs and Begin/Step mix the neighbour distribution in.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "muninn/retriever/long_context_session.h"
#include "tests/retriever/tiny_stack.h"

namespace muninn::retriever {
namespace {

namespace tt = muninn::testing;

std::unique_ptr<memory::MemoryBank> StatesBank() {
  memory::MemoryBankOptions o;
  o.in_memory = true;
  o.dim = 4;
  o.n_head_kv = 0;
  o.head_dim = 0;
  o.state_dim = tt::kEmbd;
  o.index_factory = "Flat";
  auto bank = memory::MemoryBank::Open(o);
  EXPECT_TRUE(bank.ok()) << bank.status().ToString();
  return std::move(*bank);
}

class KnnSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = std::move(*CreateCpuBackend({}));
    model_ = tt::TinyModel(backend_.get());
    tok_ = tt::ByteTokenizer();
    bank_ = StatesBank();
    text_.clear();
    for (int i = 0; i < 6; ++i) text_ += "abba cadd dab " + std::to_string(1000 + 37 * i) + " bcd; ";
    ids_ = tok_->Encode(text_, false, false);
  }
  std::unique_ptr<LongContextSession> Session(float lambda, bool memory = true,
                                              int64_t context_tokens = 0) {
    LongContextOptions o;
    o.knn.context_tokens = context_tokens;
    o.modes = kModeKnnLm;
    o.use_memory = memory;
    o.chunk_tokens = 32;
    o.local_window = 256;
    o.knn.k = 8;
    o.knn.lambda = lambda;
    o.knn.chunks = 16;
    auto s = LongContextSession::Create(model_.get(), tok_.get(), memory ? bank_.get() : nullptr,
                                        memory ? &embedder_ : nullptr, o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return std::move(*s);
  }
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<model::Tokenizer> tok_;
  std::unique_ptr<memory::MemoryBank> bank_;
  tt::KeywordEmbedder embedder_;
  std::string text_;
  std::vector<model::TokenId> ids_;
};

TEST_F(KnnSessionTest, IngestStoresEachChunksFinalStatesAndNextTokens) {
  auto s = Session(0.25f);
  auto st = s->IngestTokens(1, ids_, 0);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  ASSERT_GE(st->n_chunks, 3);
  auto fs = bank_->FetchStates(st->chunk_ids);
  ASSERT_TRUE(fs.ok()) << fs.status().ToString();
  const size_t n = ids_.size();
  ASSERT_EQ(fs->next_tokens.size(), n);
  ASSERT_EQ(fs->states.size(), n * tt::kEmbd);
  for (size_t i = 0; i + 1 < n; ++i) EXPECT_EQ(fs->next_tokens[i], ids_[i + 1]) << i;
  EXPECT_EQ(fs->next_tokens[n - 1], -1);  // nothing follows the document's last token
  // Chunk 1's states are its own forward's final normed states (each chunk runs alone).
  model::ForwardOptions fo;
  fo.compute_logits = false;
  fo.final_states = true;
  auto r = model_->Forward(std::span<const model::TokenId>(ids_).subspan(32, 32), nullptr, fo);
  ASSERT_TRUE(r.ok());
  for (int64_t i = 0; i < 32 * tt::kEmbd; ++i) {
    const float want = r->final_states.data_as<float>()[i];
    EXPECT_NEAR(fs->states[static_cast<size_t>(32 * tt::kEmbd + i)], want, 2e-3 * (1 + std::abs(want)));
  }
}

// With knn.context_tokens the stored states of a chunk are those of the chunk run after the
// tokens before it: rows [ctx, ctx + 32) of one forward over [b - ctx, b + 32).
TEST_F(KnnSessionTest, ContextTokensGiveStoredStatesTheirPrecedingText) {
  auto s = Session(0.25f, true, /*context_tokens=*/48);
  auto st = s->IngestTokens(1, ids_, 0);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  auto fs = bank_->FetchStates(st->chunk_ids);
  ASSERT_TRUE(fs.ok());
  model::ForwardOptions fo;
  fo.compute_logits = false;
  fo.final_states = true;
  const auto check = [&](int64_t chunk_begin, int64_t ctx) {
    auto r = model_->Forward(std::span<const model::TokenId>(ids_).subspan(
                                 static_cast<size_t>(chunk_begin - ctx), static_cast<size_t>(32 + ctx)),
                             nullptr, fo);
    ASSERT_TRUE(r.ok());
    for (int64_t i = 0; i < 32 * tt::kEmbd; ++i) {
      const float want = r->final_states.data_as<float>()[ctx * tt::kEmbd + i];
      ASSERT_NEAR(fs->states[static_cast<size_t>(chunk_begin * tt::kEmbd + i)], want,
                  2e-3 * (1 + std::abs(want)))
          << "chunk at " << chunk_begin << " value " << i;
    }
  };
  check(0, 0);    // nothing precedes the first chunk
  check(32, 32);  // only 32 tokens precede the second
  check(96, 48);  // capped at context_tokens
  // And the context changed the states (a chunk alone gives different ones).
  auto alone = model_->Forward(std::span<const model::TokenId>(ids_).subspan(96, 32), nullptr, fo);
  ASSERT_TRUE(alone.ok());
  EXPECT_GT(std::abs(alone->final_states.data_as<float>()[5] - fs->states[96 * tt::kEmbd + 5]), 1e-3);
}

TEST_F(KnnSessionTest, LambdaZeroEqualsNoMemoryExactly) {
  auto knn = Session(0.0f);
  ASSERT_TRUE(knn->IngestTokens(1, ids_, 0).ok());
  auto plain = Session(0.0f, /*memory=*/false);
  const auto window = std::span<const model::TokenId>(ids_).subspan(0, 64);
  const std::string q = tok_->Decode(window);
  auto a = knn->TokenLogProbs(window, q);
  auto b = plain->TokenLogProbs(window, q);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_FALSE(knn->knn_datastore().empty());  // the datastore was searched, with weight 0
  EXPECT_EQ(*a, *b);
  EXPECT_TRUE(std::equal(knn->logits().begin(), knn->logits().end(), plain->logits().begin()));
  ASSERT_TRUE(knn->Begin(window, q).ok());
  ASSERT_TRUE(plain->Begin(window, q).ok());
  ASSERT_TRUE(knn->Step(ids_[64]).ok());
  ASSERT_TRUE(plain->Step(ids_[64]).ok());
  EXPECT_TRUE(std::equal(knn->logits().begin(), knn->logits().end(), plain->logits().begin()));
}

// The datastore holds the exact continuation: a window that repeats a stored chunk finds, at every
// position, the stored state of the same prefix, whose next token is the true one.
TEST_F(KnnSessionTest, StoredContinuationRaisesItsProbability) {
  auto knn = Session(0.25f);
  ASSERT_TRUE(knn->IngestTokens(1, ids_, 0).ok());
  auto plain = Session(0.0f, /*memory=*/false);
  const auto window = std::span<const model::TokenId>(ids_).subspan(64, 32);  // chunk 2 exactly
  const std::string q = tok_->Decode(window);
  auto mixed = knn->TokenLogProbs(window, q);
  auto lm = plain->TokenLogProbs(window, q);
  ASSERT_TRUE(mixed.ok() && lm.ok());
  int raised = 0;
  for (size_t i = 0; i < lm->size(); ++i) {
    raised += (*mixed)[i] > (*lm)[i] ? 1 : 0;
    // p >= λ · p_kNN(true) and the exact-prefix neighbour dominates p_kNN at distance ~0.
    EXPECT_GT((*mixed)[i], std::log(0.25f * 0.5f)) << "position " << i;
  }
  EXPECT_GE(raised, static_cast<int>(lm->size()) - 1);
  // Generation: after the chunk's first 20 tokens the next token's probability rises too.
  ASSERT_TRUE(knn->Begin(window.subspan(0, 20), q).ok());
  ASSERT_TRUE(plain->Begin(window.subspan(0, 20), q).ok());
  const auto logp = [](std::span<const float> row, model::TokenId t) {
    float mx = row[0];
    for (float v : row) mx = std::max(mx, v);
    double z = 0;
    for (float v : row) z += std::exp(static_cast<double>(v - mx));
    return row[static_cast<size_t>(t)] - mx - std::log(z);
  };
  EXPECT_GT(logp(knn->logits(), window[20]), logp(plain->logits(), window[20]));
  EXPECT_GT(logp(knn->logits(), window[20]), std::log(0.25 * 0.5));
}

TEST_F(KnnSessionTest, FilteredOutChunksAreNeverNeighbours) {
  auto knn = Session(0.5f);
  ASSERT_TRUE(knn->IngestTokens(1, ids_, 0).ok());
  auto plain = Session(0.0f, /*memory=*/false);
  const auto window = std::span<const model::TokenId>(ids_).subspan(0, 32);
  memory::SearchFilter before_window;
  before_window.before_position = 0;  // the window is the document's start: nothing precedes it
  auto a = knn->TokenLogProbs(window, tok_->Decode(window), before_window);
  auto b = plain->TokenLogProbs(window, tok_->Decode(window));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(knn->knn_datastore().empty());
  EXPECT_EQ(*a, *b);
}

}  // namespace
}  // namespace muninn::retriever
