// Synthetic recall tasks and their memory source on the tiny stack: the examples are what they
// say (fact only in memory, loss only on the answer), the curriculum's three stages give the
// memory they promise, the bank is left as found, and the memory a training step reads is the
// memory inference reads (the training loss equals the session's own scores).
#include "muninn/retriever/recall_memory_source.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "muninn/core/cross_entropy.h"
#include "muninn/model/lora.h"
#include "muninn/model/recall_tasks.h"
#include "muninn/model/train_model.h"
#include "retriever/tiny_stack.h"

namespace muninn::retriever {
namespace {

using muninn::testing::ByteTokenizer;
using muninn::testing::InMemoryBank;
using muninn::testing::KeywordEmbedder;
using muninn::testing::TinyModel;

constexpr int64_t kTau = 96;  // byte tokens: a fact sentence takes ~60

const std::string kFiller =
    "In the beginning the earth was without form, and void; and darkness was upon the deep.\n"
    "And the evening and the morning were the first day, and it was so.\n"
    "Then came a great wind over the waters, and the hills stood still before it.\n"
    "The people gathered at the river and spoke of the harvest and of the rain.\n";

std::string Text(const model::Tokenizer& tok, std::span<const model::TokenId> ids) {
  return tok.Decode(ids, true);
}

TEST(RecallTasksTest, FactOnlyInMemoryAndLossOnlyOnTheAnswer) {
  auto tok = ByteTokenizer();
  model::RecallTaskOptions o;
  o.examples = 40;
  o.chunk_tokens = kTau;
  o.min_local_filler = 8;
  o.max_local_filler = 40;
  auto ex = model::MakeRecallTasks(*tok, kFiller, o);
  ASSERT_TRUE(ex.ok()) << ex.status();
  ASSERT_EQ(ex->size(), 40u);
  int two = 0, passkey = 0;
  for (const model::RecallExample& e : *ex) {
    ASSERT_EQ(static_cast<int64_t>(e.memory.size()), e.memory_chunks * kTau);
    two += e.memory_chunks == 2;
    passkey += e.question == "What is the pass key? The pass key is";
    EXPECT_GE(e.answer.size(), 3u);
    EXPECT_LE(e.answer.size(), 7u);
    const std::string mem = Text(*tok, e.memory);
    EXPECT_NE(mem.find(e.answer), std::string::npos) << mem;
    const size_t at = mem.find(e.answer);
    if (e.memory_chunks == 2) {
      // The fact's line straddles the chunk boundary.
      const size_t line_start = mem.rfind('\n', at);
      const size_t line_end = mem.find('\n', at);
      ASSERT_NE(line_start, std::string::npos);
      ASSERT_NE(line_end, std::string::npos);
      EXPECT_LT(line_start, static_cast<size_t>(kTau));
      EXPECT_GT(line_end, static_cast<size_t>(kTau));
    }
    // The local block holds the question but not the key; labels are exactly the answer's tokens.
    ASSERT_EQ(e.ids.size(), e.labels.size());
    std::vector<model::TokenId> answer;
    for (size_t t = 0; t < e.labels.size(); ++t) {
      if (e.labels[t] == kIgnoreLabel) {
        EXPECT_TRUE(answer.empty()) << "a gap inside the answer";
        continue;
      }
      if (t + 1 < e.ids.size()) {
        EXPECT_EQ(e.labels[t], e.ids[t + 1]);
      }
      answer.push_back(e.labels[t]);
    }
    EXPECT_EQ(Text(*tok, answer), " " + e.answer + ".");
    // Before the answer the block never shows the key.
    const size_t first = static_cast<size_t>(
        std::find_if(e.labels.begin(), e.labels.end(), [](model::TokenId l) { return l != kIgnoreLabel; }) -
        e.labels.begin());
    const std::string local = Text(*tok, std::span<const model::TokenId>(e.ids).subspan(0, first + 1));
    EXPECT_EQ(local.find(e.answer), std::string::npos) << local;
    EXPECT_NE(local.find("\n" + e.question), std::string::npos);
  }
  EXPECT_GT(two, 0);
  EXPECT_LT(two, 40);
  EXPECT_GT(passkey, 5);
  EXPECT_LT(passkey, 35);
  // Deterministic in the seed, different across seeds.
  auto again = model::MakeRecallTasks(*tok, kFiller, o);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)[7].ids, (*ex)[7].ids);
  EXPECT_EQ((*again)[7].memory, (*ex)[7].memory);
  o.seed = 2;
  auto other = model::MakeRecallTasks(*tok, kFiller, o);
  ASSERT_TRUE(other.ok());
  EXPECT_NE((*other)[7].answer + Text(*tok, (*other)[7].ids), (*ex)[7].answer + Text(*tok, (*ex)[7].ids));
  // passkey_share 1: every example asks the standard passkey question.
  model::RecallTaskOptions all = o;
  all.passkey_share = 1.0;
  auto pk = model::MakeRecallTasks(*tok, kFiller, all);
  ASSERT_TRUE(pk.ok());
  for (const auto& e : *pk) EXPECT_EQ(e.question, "What is the pass key? The pass key is");
  // Bad options and texts are refused.
  o.chunk_tokens = 16;
  EXPECT_EQ(model::MakeRecallTasks(*tok, kFiller, o).status().code(), StatusCode::kInvalidArgument);
  o.chunk_tokens = 48;  // valid, but a fact does not fit a chunk of 48 bytes
  EXPECT_EQ(model::MakeRecallTasks(*tok, kFiller, o).status().code(), StatusCode::kInvalidArgument);
  o.chunk_tokens = kTau;
  EXPECT_EQ(model::MakeRecallTasks(*tok, "too short", o).status().code(), StatusCode::kInvalidArgument);
}

class RecallMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = std::move(*CreateCpuBackend({}));
    model_ = TinyModel(backend_.get());
    tok_ = ByteTokenizer();
    bank_ = InMemoryBank(4);
    opts_.modes = kModeMemLong;
    opts_.memory_layer = 1;
    opts_.retrieval_layers = {2, 3};
    opts_.chunk_tokens = kTau;
    opts_.top_k = 3;
    opts_.local_window = 256;
    opts_.kv_cache_dtype = DType::kF32;
    auto s = LongContextSession::Create(model_.get(), tok_.get(), bank_.get(), &embedder_, opts_);
    ASSERT_TRUE(s.ok()) << s.status();
    session_ = std::move(*s);
    model::RecallTaskOptions to;
    to.examples = 6;
    to.chunk_tokens = kTau;
    to.min_local_filler = 8;
    to.max_local_filler = 24;
    examples_ = std::move(*model::MakeRecallTasks(*tok_, kFiller, to));
    pool_ = std::move(*model::MakeFillerChunks(*tok_, kFiller, kTau, 5, 3));
  }
  std::unique_ptr<RecallMemorySource> Source(const RecallCurriculum& c) {
    RecallMemoryOptions o;
    o.curriculum = c;
    auto s = RecallMemorySource::Create(session_.get(), &embedder_, &examples_, &examples_, pool_, o);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<model::Tokenizer> tok_;
  std::unique_ptr<memory::MemoryBank> bank_;
  KeywordEmbedder embedder_;
  LongContextOptions opts_;
  std::unique_ptr<LongContextSession> session_;
  std::vector<model::RecallExample> examples_;
  std::vector<std::vector<model::TokenId>> pool_;
};

TEST_F(RecallMemoryTest, CurriculumStagesGiveTheMemoryTheyPromise) {
  auto src = Source({/*gold_only_steps=*/2, /*distractor_steps=*/2});
  EXPECT_EQ(bank_->Stats().n_chunks, 5);  // the pool
  for (int64_t b = 0; b < 6; ++b) {
    const int64_t gold = examples_[static_cast<size_t>(b)].memory_chunks;
    // Stage 1: the gold chunk(s) alone, on the retrieval layers only.
    auto m = src->Before(model::TrainUse::kTrain, 0, b, /*step=*/1);
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_NE(*m, nullptr);
    EXPECT_EQ(src->last_chunks(), gold);
    EXPECT_TRUE(src->last_has_gold());
    EXPECT_EQ((*m)->ForLayer(1), nullptr);
    ASSERT_NE((*m)->ForLayer(2), nullptr);
    ASSERT_NE((*m)->ForLayer(3), nullptr);
    EXPECT_EQ((*m)->ForLayer(2)->k.dim(0), gold * kTau);
    EXPECT_EQ(bank_->Stats().n_chunks, 5 + gold);
    ASSERT_TRUE(src->After(model::TrainUse::kTrain, 0, b).ok());
    EXPECT_EQ(bank_->Stats().n_chunks, 5);  // the example's chunks are gone again
    // Stage 2: gold plus distractors up to top_k, the same ones for the same (block, step).
    m = src->Before(model::TrainUse::kTrain, 0, b, /*step=*/2);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(src->last_chunks(), 3);
    EXPECT_TRUE(src->last_has_gold());
    const Tensor k2 = *(*m)->ForLayer(3)->k.Contiguous();
    const std::vector<float> first(k2.data_as<float>(), k2.data_as<float>() + k2.numel());
    ASSERT_TRUE(src->After(model::TrainUse::kTrain, 0, b).ok());
    m = src->Before(model::TrainUse::kTrain, 0, b, /*step=*/2);
    ASSERT_TRUE(m.ok());
    const Tensor k2b = *(*m)->ForLayer(3)->k.Contiguous();
    EXPECT_EQ(std::vector<float>(k2b.data_as<float>(), k2b.data_as<float>() + k2b.numel()), first);
    ASSERT_TRUE(src->After(model::TrainUse::kTrain, 0, b).ok());
    // Stage 3 (and held-out blocks at any step): the retriever's top_k.
    m = src->Before(model::TrainUse::kEval, 0, b, /*step=*/0);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(src->last_chunks(), 3);
    ASSERT_TRUE(src->After(model::TrainUse::kEval, 0, b).ok());
  }
  EXPECT_GE(src->gold_recall(), 0.0);
  EXPECT_LE(src->gold_recall(), 1.0);
  EXPECT_EQ(src->Before(model::TrainUse::kTrain, 0, 6, 0).status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(src->Describe().find("\"gold_only_steps\":2"), std::string::npos) << src->Describe();
}

TEST_F(RecallMemoryTest, TrainingReadsTheMemoryInferenceReads) {
  // At the real-top-k stage the source's memory is the session's own retrieval for the question,
  // so the training forward's loss on the answer equals the session's scores of those tokens.
  auto src = Source({0, 0});
  model::LoraConfig lc;
  lc.rank = 2;
  lc.alpha = 4.0f;
  lc.first_layer = 2;
  lc.targets = {model::LoraTarget::kQ, model::LoraTarget::kV};
  // A fresh adapter (B = 0) is the base model, which is what the session runs.
  auto params = model::LoraParams::Create(model_->config(), model_->weights(), lc);
  ASSERT_TRUE(params.ok()) << params.status();
  params->InitPeft(5);
  auto tm = model::TrainModel::Create(model_.get(), lc);
  ASSERT_TRUE(tm.ok()) << tm.status();
  for (int64_t b = 0; b < 3; ++b) {
    const model::RecallExample& ex = examples_[static_cast<size_t>(b)];
    auto m = src->Before(model::TrainUse::kEval, 0, b, 0);
    ASSERT_TRUE(m.ok()) << m.status();
    model::TrainBatch batch;
    batch.ids = ex.ids;
    batch.labels = ex.labels;
    batch.memory = *m;
    auto loss = (*tm)->Loss(*params, batch);
    ASSERT_TRUE(loss.ok()) << loss.status();
    memory::SearchFilter filter;
    filter.doc_ids = {1, 2};
    auto lp = session_->TokenLogProbs(ex.ids, ex.question, filter);
    ASSERT_TRUE(lp.ok()) << lp.status();
    EXPECT_EQ(session_->retrieved().hits.size(), static_cast<size_t>(src->last_chunks()));
    double want = 0.0;
    for (size_t t = 0; t + 1 < ex.ids.size(); ++t) {
      if (ex.labels[t] != kIgnoreLabel) want -= (*lp)[t];
    }
    // The block's last label (the answer's last token) has no next input to score it: the
    // session scores up to the block's last token, so compare the positions both see.
    double last = 0.0;
    if (ex.labels.back() != kIgnoreLabel) {
      model::TrainBatch tail = batch;
      std::vector<int32_t> only_last(ex.labels.size(), kIgnoreLabel);
      only_last.back() = ex.labels.back();
      tail.labels = only_last;
      auto l2 = (*tm)->Loss(*params, tail);
      ASSERT_TRUE(l2.ok());
      last = l2->loss_sum;
    }
    EXPECT_NEAR(loss->loss_sum - last, want, 1e-3 * std::max(1.0, std::abs(want))) << "block " << b;
    ASSERT_TRUE(src->After(model::TrainUse::kEval, 0, b).ok());
  }
}

TEST_F(RecallMemoryTest, RefusesWhatItCannotServe) {
  RecallMemoryOptions o;
  // Another mode than MemLong.
  LongContextOptions reread = opts_;
  reread.modes = kModeReread;
  auto bank2 = InMemoryBank(4);
  auto s2 = LongContextSession::Create(model_.get(), tok_.get(), bank2.get(), &embedder_, reread);
  ASSERT_TRUE(s2.ok()) << s2.status();
  EXPECT_EQ(RecallMemorySource::Create(s2->get(), &embedder_, &examples_, nullptr, pool_, o)
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  // Pool chunks of the wrong length, examples made for another chunk length, no examples.
  std::vector<std::vector<model::TokenId>> bad_pool = {std::vector<model::TokenId>(10, 65)};
  EXPECT_EQ(RecallMemorySource::Create(session_.get(), &embedder_, &examples_, nullptr, bad_pool, o)
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  std::vector<model::RecallExample> wrong = examples_;
  wrong[0].memory.pop_back();
  EXPECT_EQ(RecallMemorySource::Create(session_.get(), &embedder_, &wrong, nullptr, pool_, o)
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  std::vector<model::RecallExample> none;
  EXPECT_EQ(RecallMemorySource::Create(session_.get(), &embedder_, &none, nullptr, pool_, o)
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  // A bank that already holds chunks.
  ASSERT_TRUE(session_->IngestTokens(9, pool_[0], 0).ok());
  EXPECT_EQ(RecallMemorySource::Create(session_.get(), &embedder_, &examples_, nullptr, pool_, o)
                .status()
                .code(),
            StatusCode::kFailedPrecondition);
  o.curriculum.gold_only_steps = -1;
  EXPECT_EQ(o.Validate().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace muninn::retriever
