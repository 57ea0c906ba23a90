#include "muninn/retriever/long_context_session.h"

#include <gtest/gtest.h>

#include <cmath>

#include "muninn/core/fp16.h"
#include "muninn/retriever/hidden_state_embedder.h"
#include "retriever/tiny_stack.h"

namespace muninn::retriever {
namespace {

using muninn::testing::ByteTokenizer;
using muninn::testing::InMemoryBank;
using muninn::testing::KeywordEmbedder;
using muninn::testing::TinyModel;

class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = std::move(*CreateCpuBackend({}));
    model_ = TinyModel(backend_.get());
    tok_ = ByteTokenizer();
    bank_ = InMemoryBank(4);
    opts_.memory_layer = 1;
    opts_.retrieval_layers = {1, 3};
    opts_.chunk_tokens = 16;
    opts_.top_k = 2;
    opts_.local_window = 64;
    opts_.kv_cache_dtype = DType::kF32;
  }
  std::unique_ptr<LongContextSession> Session(const LongContextOptions& o) {
    auto s = LongContextSession::Create(model_.get(), tok_.get(), bank_.get(), &embedder_, o);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }
  std::vector<model::TokenId> Ids(const std::string& text) { return tok_->Encode(text, false, false); }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<model::Tokenizer> tok_;
  std::unique_ptr<memory::MemoryBank> bank_;
  KeywordEmbedder embedder_;
  LongContextOptions opts_;
};

// 16-byte chunks with distinct letters so the keyword embedder tells them apart.
const std::string kDoc =
    "aaaaaaaaaaaaaaaa"  // chunk 0: 'a'
    "bbbbbbbbbbbbbbbb"  // chunk 1: 'b'
    "cccccccccccccccc"  // chunk 2: 'c'
    "ddddddddddddddd";  // chunk 3: 'd' (15 bytes: a short last chunk)

TEST_F(SessionTest, IngestStoresMemoryLayerKvOfEachWindow) {
  auto session = Session(opts_);
  auto stats = session->IngestText(7, kDoc);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->n_tokens, 63);
  ASSERT_EQ(stats->n_chunks, 4);
  const auto ids = Ids(kDoc);
  for (int c = 0; c < 4; ++c) {
    auto rec = bank_->GetChunk(stats->chunk_ids[static_cast<size_t>(c)]);
    ASSERT_TRUE(rec.ok()) << rec.status();
    EXPECT_EQ(rec->info.doc_id, 7u);
    EXPECT_EQ(rec->info.position, 16 * c);
    EXPECT_EQ(rec->text, kDoc.substr(static_cast<size_t>(16 * c), 16));
    // The stored K equals the pre-RoPE K of the memory layer for that window run alone.
    const auto window = std::span<const model::TokenId>(ids).subspan(static_cast<size_t>(16 * c),
                                                                     rec->tokens.size());
    model::ForwardOptions fo;
    fo.capture_layer = 1;
    fo.compute_logits = false;
    auto direct = model_->Forward(window, nullptr, fo);
    ASSERT_TRUE(direct.ok());
    const int64_t t = static_cast<int64_t>(window.size());
    for (int64_t h = 0; h < muninn::testing::kHeadsKv; ++h) {
      for (int64_t i = 0; i < t; ++i) {
        for (int64_t j = 0; j < muninn::testing::kHd; ++j) {
          const float want = direct->captured_k.data_as<float>()[(i * muninn::testing::kHeadsKv + h) * muninn::testing::kHd + j];
          const float got = rec->k.data_as<float>()[(h * t + i) * muninn::testing::kHd + j];
          ASSERT_NEAR(got, want, 2e-3f * (1.0f + std::fabs(want))) << "chunk " << c;  // f16 bank
        }
      }
    }
  }
}

TEST_F(SessionTest, BeginRetrievesChronologicallyAndMatchesDirectForward) {
  auto session = Session(opts_);
  ASSERT_TRUE(session->IngestText(1, kDoc).ok());
  // A query about 'd' and 'b': those two chunks, returned oldest first.
  const std::string query = "ddddbbbb";
  ASSERT_TRUE(session->Begin(Ids("xyz"), query).ok());
  const Retrieved& r = session->retrieved();
  ASSERT_EQ(r.hits.size(), 2u);
  EXPECT_EQ(r.hits[0].position, 16);
  EXPECT_EQ(r.hits[1].position, 48);
  EXPECT_EQ(r.n_tokens(), 16 + 15);
  const std::vector<float> with_memory(session->logits().begin(), session->logits().end());

  // The same forward done by hand with the same memory gives the same logits.
  model::MemoryKV mem = r.ForLayers(opts_.retrieval_layers);
  model::ForwardOptions fo;
  fo.memory = &mem;
  auto direct = model_->Forward(Ids("xyz"), nullptr, fo);
  ASSERT_TRUE(direct.ok());
  for (size_t i = 0; i < with_memory.size(); ++i) {
    ASSERT_NEAR(with_memory[i], direct->logits.data_as<float>()[i], 1e-4f);
  }
  // And memory changes the prediction.
  auto plain = model_->Forward(Ids("xyz"), nullptr, {});
  double diff = 0;
  for (size_t i = 0; i < with_memory.size(); ++i) diff += std::fabs(with_memory[i] - plain->logits.data_as<float>()[i]);
  EXPECT_GT(diff, 1e-3);
}

TEST_F(SessionTest, FilterKeepsTheFutureOut) {
  auto session = Session(opts_);
  ASSERT_TRUE(session->IngestText(1, kDoc).ok());
  memory::SearchFilter f;
  f.doc_ids = {1};
  f.before_position = 32;  // a window starting at token 32 sees chunks 0 and 1 only
  ASSERT_TRUE(session->Begin(Ids("q"), "dddd cccc", f).ok());
  for (const auto& h : session->retrieved().hits) EXPECT_LT(h.position, 32);
  f.doc_ids = {2};  // no such document
  ASSERT_TRUE(session->Begin(Ids("q"), "dddd", f).ok());
  EXPECT_TRUE(session->retrieved().empty());
}

TEST_F(SessionTest, NoMemoryIsPlainAttention) {
  LongContextOptions o = opts_;
  o.use_memory = false;
  auto session = Session(o);
  ASSERT_TRUE(session->IngestText(1, kDoc).ok());
  ASSERT_TRUE(session->Begin(Ids("xyz"), "dddd").ok());
  EXPECT_TRUE(session->retrieved().empty());
  auto plain = model_->Forward(Ids("xyz"), nullptr, {});
  for (size_t i = 0; i < session->logits().size(); ++i) {
    ASSERT_NEAR(session->logits()[i], plain->logits.data_as<float>()[i], 1e-4f);
  }
}

TEST_F(SessionTest, BeforeWindowPositionsRotateMemoryKeys) {
  auto zero = Session(opts_);
  ASSERT_TRUE(zero->IngestText(1, kDoc).ok());
  ASSERT_TRUE(zero->Begin(Ids("xyz"), "bbbb").ok());
  const std::vector<float> a(zero->logits().begin(), zero->logits().end());
  LongContextOptions o = opts_;
  o.memory_position = MemoryPosition::kBeforeWindow;
  auto before = Session(o);
  ASSERT_TRUE(before->Begin(Ids("xyz"), "bbbb").ok());
  ASSERT_EQ(before->retrieved().hits.size(), zero->retrieved().hits.size());
  double diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff += std::fabs(a[i] - before->logits()[i]);
  EXPECT_GT(diff, 1e-4) << "rotating memory keys to positions before the window must matter";
}

TEST_F(SessionTest, GenerationOverflowsIntoMemory) {
  LongContextOptions o = opts_;
  o.local_window = 24;
  auto session = Session(o);
  ASSERT_TRUE(session->Begin(Ids("abcdabcdabcdabcdabcd"), "abcd").ok());
  auto sampler = *model::Sampler::Create(model::SamplerOptions::Greedy());
  GenerateOptions go;
  go.max_tokens = 40;
  go.stop_at_eos = false;
  auto r = session->Generate(go, sampler);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tokens.size(), 40u);
  EXPECT_LE(static_cast<int64_t>(session->window_tokens().size()), o.local_window);
  // Overflow moved the oldest halves into the bank under the overflow document.
  int64_t overflow_tokens = 0;
  for (const auto& c : bank_->ListChunks()) {
    EXPECT_EQ(c.doc_id, o.overflow_doc_id);
    overflow_tokens += c.n_tokens;
  }
  EXPECT_GT(overflow_tokens, 0);
  // Every token is either in memory or in the window, never both, never lost:
  // prompt (20) + 39 stepped tokens = 59 positions seen.
  EXPECT_EQ(overflow_tokens + static_cast<int64_t>(session->window_tokens().size()), 20 + 39);
}

TEST_F(SessionTest, StopStringsEndGenerationAndAreNotEmitted) {
  auto session = Session(opts_);
  ASSERT_TRUE(session->Begin(Ids("hello"), "").ok());
  auto sampler = *model::Sampler::Create(model::SamplerOptions::Greedy());
  GenerateOptions go;
  go.max_tokens = 30;
  go.stop_at_eos = false;
  auto full = session->Generate(go, sampler);
  ASSERT_TRUE(full.ok());
  ASSERT_GE(full->text.size(), 6u);
  // Stop at a string the greedy continuation is known to produce.
  const std::string stop = full->text.substr(3, 2);
  go.stop_strings = {stop};
  ASSERT_TRUE(session->Begin(Ids("hello"), "").ok());
  std::string streamed;
  auto cut = session->Generate(go, sampler, [&](std::string_view p) { streamed += p; });
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(cut->stop_reason, "stop_string");
  EXPECT_EQ(cut->text, full->text.substr(0, full->text.find(stop)));
  EXPECT_EQ(streamed, cut->text);
}

TEST_F(SessionTest, ShouldStopEndsGenerationBetweenTokens) {
  auto session = Session(opts_);
  ASSERT_TRUE(session->Begin(Ids("hello"), "").ok());
  auto sampler = *model::Sampler::Create(model::SamplerOptions::Greedy());
  GenerateOptions go;
  go.max_tokens = 30;
  go.stop_at_eos = false;
  int asked = 0;
  go.should_stop = [&] { return ++asked > 3; };
  auto r = session->Generate(go, sampler);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stop_reason, "cancelled");
  EXPECT_EQ(r->tokens.size(), 3u);
  EXPECT_EQ(asked, 4);
}

TEST_F(SessionTest, BadInputsAreErrors) {
  LongContextOptions o = opts_;
  o.retrieval_layers = {0};  // below the memory layer
  EXPECT_EQ(LongContextSession::Create(model_.get(), tok_.get(), bank_.get(), &embedder_, o).status().code(),
            StatusCode::kInvalidArgument);
  o = opts_;
  o.memory_layer = 9;
  EXPECT_FALSE(LongContextSession::Create(model_.get(), tok_.get(), bank_.get(), &embedder_, o).ok());
  // KV cache dtypes: f16, f32 or q8_0 pass the options' check (this model's 8-wide heads then
  // cannot hold q8_0 blocks of 32, which the cache itself says); anything else does not.
  o = opts_;
  o.kv_cache_dtype = DType::kQ4_0;
  auto q4 = LongContextSession::Create(model_.get(), tok_.get(), bank_.get(), &embedder_, o);
  EXPECT_NE(q4.status().message().find("must be f16, f32 or q8_0"), std::string::npos) << q4.status();
  o.kv_cache_dtype = DType::kQ8_0;
  auto q8 = LongContextSession::Create(model_.get(), tok_.get(), bank_.get(), &embedder_, o);
  EXPECT_NE(q8.status().message().find("multiple of 32"), std::string::npos) << q8.status();
  auto session = Session(opts_);
  EXPECT_EQ(session->Begin({}, "").code(), StatusCode::kInvalidArgument);
  std::vector<model::TokenId> too_long(100, 97);
  EXPECT_EQ(session->Begin(too_long, "").code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(session->Step(97).code(), StatusCode::kFailedPrecondition);
}

TEST_F(SessionTest, HiddenStateEmbedderPoolsTheMemoryLayerInput) {
  auto emb = HiddenStateEmbedder::Create(model_.get(), 1);
  ASSERT_TRUE(emb.ok());
  const auto ids = Ids("abcabc");
  auto v = (*emb)->Embed(std::vector<EmbedRequest>{{"abcabc", ids}, {"", {}}});
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->size(), 2u * muninn::testing::kEmbd);
  double norm = 0, mean0 = 0;
  for (int j = 0; j < muninn::testing::kEmbd; ++j) norm += (*v)[static_cast<size_t>(j)] * (*v)[static_cast<size_t>(j)];
  EXPECT_NEAR(norm, 1.0, 1e-5);
  for (int j = 0; j < muninn::testing::kEmbd; ++j) EXPECT_EQ((*v)[static_cast<size_t>(muninn::testing::kEmbd + j)], 0.0f);
  // Direction = mean of layer 0's output over the tokens.
  std::vector<double> mean(muninn::testing::kEmbd, 0.0);
  model::ForwardOptions fo;
  fo.compute_logits = false;
  fo.observer = [&](const model::Intermediate& im) {
    if (im.name != "hidden" || im.layer != 0) return;
    for (int64_t t = 0; t < im.value.dim(0); ++t)
      for (int j = 0; j < muninn::testing::kEmbd; ++j) mean[static_cast<size_t>(j)] += im.value.data_as<float>()[t * muninn::testing::kEmbd + j];
  };
  ASSERT_TRUE(model_->Forward(ids, nullptr, fo).ok());
  double mn = 0;
  for (double x : mean) mn += x * x;
  mn = std::sqrt(mn);
  for (int j = 0; j < muninn::testing::kEmbd; ++j) {
    mean0 = mean[static_cast<size_t>(j)] / mn;
    EXPECT_NEAR((*v)[static_cast<size_t>(j)], mean0, 1e-4);
  }
  EXPECT_FALSE(HiddenStateEmbedder::Create(model_.get(), 99).ok());
}

}  // namespace
}  // namespace muninn::retriever
