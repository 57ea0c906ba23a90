// MemLong's training protocol on the tiny stack: each document a stream whose blocks read the
// chunks written before them (never another document's, never their own), the memory is what a
// session would read for the same window, a resumed source rebuilds the same memory, and blocks
// are written once and in order.
#include "muninn/retriever/stream_memory_source.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "muninn/core/cross_entropy.h"
#include "muninn/model/lora.h"
#include "muninn/model/train_model.h"
#include "retriever/tiny_stack.h"

namespace muninn::retriever {
namespace {

using muninn::testing::ByteTokenizer;
using muninn::testing::InMemoryBank;
using muninn::testing::KeywordEmbedder;
using muninn::testing::TinyModel;

class StreamMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = std::move(*CreateCpuBackend({}));
    model_ = TinyModel(backend_.get());
    tok_ = ByteTokenizer();
    opts_.modes = kModeMemLong;
    opts_.memory_layer = 1;
    opts_.retrieval_layers = {2, 3};
    opts_.chunk_tokens = 16;
    opts_.top_k = 2;
    opts_.local_window = 64;
    opts_.kv_cache_dtype = DType::kF32;
    // Two documents of letter runs the keyword embedder tells apart: 4 blocks of 32 and 2 of 32.
    std::string d0, d1;
    for (int i = 0; i < 8; ++i) d0 += std::string(16, static_cast<char>('a' + i % 4));
    for (int i = 0; i < 4; ++i) d1 += std::string(16, static_cast<char>('d' - i % 4));
    auto data = model::TrainData::FromDocuments(
        {tok_->Encode(d0 + "!", false, false), tok_->Encode(d1 + "?", false, false)},
        muninn::testing::kVocab, 32);
    ASSERT_TRUE(data.ok()) << data.status();
    data_ = std::make_unique<model::TrainData>(std::move(data).value());
    ASSERT_EQ(data_->n_blocks(), 6);
  }
  struct Stack {
    std::unique_ptr<memory::MemoryBank> bank;
    std::unique_ptr<LongContextSession> session;
    std::unique_ptr<StreamMemorySource> source;
  };
  Stack Make(int64_t query_tokens = 16) {
    Stack s;
    s.bank = InMemoryBank(4);
    s.session = std::move(*LongContextSession::Create(model_.get(), tok_.get(), s.bank.get(),
                                                      &embedder_, opts_));
    StreamMemoryOptions o;
    o.query_tokens = query_tokens;
    auto src = StreamMemorySource::Create(s.session.get(), &embedder_, data_.get(), nullptr, o);
    EXPECT_TRUE(src.ok()) << src.status();
    s.source = std::move(*src);
    return s;
  }
  static std::vector<float> Keys(const model::MemoryKV* m) {
    if (m == nullptr || m->ForLayer(2) == nullptr) return {};
    const Tensor k = *m->ForLayer(2)->k.Contiguous();
    return std::vector<float>(k.data_as<float>(), k.data_as<float>() + k.numel());
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<model::Tokenizer> tok_;
  KeywordEmbedder embedder_;
  LongContextOptions opts_;
  std::unique_ptr<model::TrainData> data_;
};

TEST_F(StreamMemoryTest, BlocksReadTheirOwnStreamsPastOnly) {
  Stack s = Make();
  std::vector<int64_t> chunks;
  for (int64_t b = 0; b < 6; ++b) {
    auto m = s.source->Before(model::TrainUse::kTrain, 0, b, 0);
    ASSERT_TRUE(m.ok()) << m.status();
    chunks.push_back(s.source->last_chunks());
    if (s.source->last_chunks() > 0) {
      EXPECT_EQ((*m)->ForLayer(1), nullptr);
      ASSERT_NE((*m)->ForLayer(3), nullptr);
      EXPECT_EQ((*m)->ForLayer(3)->k.dim(0), 16 * s.source->last_chunks());
    }
    ASSERT_TRUE(s.source->After(model::TrainUse::kTrain, 0, b).ok());
  }
  // Each document's first block has no past; later ones read top_k (2) of their own past chunks.
  EXPECT_EQ(chunks, (std::vector<int64_t>{0, 2, 2, 2, 0, 2}));
  EXPECT_EQ(s.bank->Stats().n_chunks, 8 + 4);  // every block written once (the last ones short)
  // The data wraps around: block 0 again is not written twice.
  ASSERT_TRUE(s.source->Before(model::TrainUse::kTrain, 0, 0, 3).ok());
  ASSERT_TRUE(s.source->After(model::TrainUse::kTrain, 0, 0).ok());
  EXPECT_EQ(s.bank->Stats().n_chunks, 12);
  EXPECT_NE(s.source->Describe().find("\"kind\":\"stream\""), std::string::npos);
}

TEST_F(StreamMemoryTest, AStreamReadsOnlyWhatItWroteItself) {
  // Two streams cut document 0 after block 1: stream 1 starts at block 2 with no memory although
  // stream 0 wrote blocks 0 and 1 of the same document (under MPI they live in other processes).
  Stack s = Make();
  for (int64_t b = 0; b < 2; ++b) {
    ASSERT_TRUE(s.source->Before(model::TrainUse::kTrain, 0, b, 0).ok());
    ASSERT_TRUE(s.source->After(model::TrainUse::kTrain, 0, b).ok());
  }
  auto m = s.source->Before(model::TrainUse::kTrain, 1, 2, 0);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(s.source->last_chunks(), 0);
  ASSERT_TRUE(s.source->After(model::TrainUse::kTrain, 1, 2).ok());
  m = s.source->Before(model::TrainUse::kTrain, 1, 3, 0);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(s.source->last_chunks(), 2);  // its own block 2
  // The same stream in a process of its own gives the same memory.
  Stack alone = Make();
  ASSERT_TRUE(alone.source->Before(model::TrainUse::kTrain, 1, 2, 0).ok());
  ASSERT_TRUE(alone.source->After(model::TrainUse::kTrain, 1, 2).ok());
  auto m2 = alone.source->Before(model::TrainUse::kTrain, 1, 3, 0);
  ASSERT_TRUE(m2.ok());
  EXPECT_EQ(Keys(*m2), Keys(*m));
}

TEST_F(StreamMemoryTest, MemoryIsWhatTheSessionReadsForTheWindow) {
  Stack s = Make();
  model::LoraConfig lc;
  lc.rank = 2;
  lc.alpha = 4.0f;
  lc.first_layer = 2;
  auto params = model::LoraParams::Create(model_->config(), model_->weights(), lc);
  ASSERT_TRUE(params.ok()) << params.status();
  params->InitPeft(3);  // B = 0: the base model, which is what the session runs
  auto tm = model::TrainModel::Create(model_.get(), lc);
  ASSERT_TRUE(tm.ok()) << tm.status();
  for (int64_t b = 0; b < 4; ++b) {
    auto m = s.source->Before(model::TrainUse::kTrain, 0, b, 0);
    ASSERT_TRUE(m.ok());
    if (b >= 1) {
      model::TrainBatch batch;
      batch.ids = data_->ids(b);
      batch.labels = data_->labels(b);
      batch.memory = *m;
      auto loss = (*tm)->Loss(*params, batch);
      ASSERT_TRUE(loss.ok()) << loss.status();
      memory::SearchFilter filter;
      filter.doc_ids = {1};
      filter.before_position = data_->position(b);
      const std::string query = tok_->Decode(data_->preceding(b, 16), true);
      auto lp = s.session->TokenLogProbs(data_->ids(b), query, filter);
      ASSERT_TRUE(lp.ok()) << lp.status();
      EXPECT_EQ(static_cast<int64_t>(s.session->retrieved().hits.size()), s.source->last_chunks());
      // The session scores positions 0..T-2 (each next input); the block's last label is the
      // token after it, which only the training loss sees.
      double want = 0.0;
      for (float x : *lp) want -= x;
      model::TrainBatch last = batch;
      std::vector<int32_t> only_last(batch.labels.size(), kIgnoreLabel);
      only_last.back() = batch.labels.back();
      last.labels = only_last;
      auto l2 = (*tm)->Loss(*params, last);
      ASSERT_TRUE(l2.ok());
      EXPECT_NEAR(loss->loss_sum - l2->loss_sum, want, 1e-3 * std::max(1.0, std::abs(want)))
          << "block " << b;
    }
    ASSERT_TRUE(s.source->After(model::TrainUse::kTrain, 0, b).ok());
  }
}

TEST_F(StreamMemoryTest, RestoreRebuildsTheMemoryOfTheCursorsDocument) {
  Stack a = Make();
  std::vector<float> want;
  for (int64_t b = 0; b < 3; ++b) {
    auto m = a.source->Before(model::TrainUse::kTrain, 0, b, 0);
    ASSERT_TRUE(m.ok());
    if (b == 2) want = Keys(*m);
    ASSERT_TRUE(a.source->After(model::TrainUse::kTrain, 0, b).ok());
  }
  ASSERT_FALSE(want.empty());
  Stack r = Make();
  const model::TrainStreamPosition at[] = {{0, /*first_block=*/0, /*next_block=*/2}};
  ASSERT_TRUE(r.source->Restore(at, /*step=*/1).ok());
  auto m = r.source->Before(model::TrainUse::kTrain, 0, 2, 1);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(Keys(*m), want);
  // A stream may start inside a document, but writing past a gap (block 3 after block 1, block
  // 2 never written) is an internal error, not a silent hole in the memory.
  Stack g = Make();
  ASSERT_TRUE(g.source->After(model::TrainUse::kTrain, 0, 1).ok());
  EXPECT_EQ(g.source->After(model::TrainUse::kTrain, 0, 3).code(), StatusCode::kInternal);
  EXPECT_EQ(g.source->Before(model::TrainUse::kEval, 0, 0, 0).status().code(), StatusCode::kOutOfRange);
  StreamMemoryOptions bad;
  bad.query_tokens = 0;
  EXPECT_EQ(bad.Validate().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace muninn::retriever
