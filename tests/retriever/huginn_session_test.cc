// The long-context session on a recurrent-depth (Huginn) model: the prelude's last layer is the
// memory layer (its K/V are what ingest stores) and the coda's layers are the retrieval layers.
// The session's logits equal a direct forward with the same memory, and generation overflows
// into memory as with a llama model.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <unistd.h>

#include "muninn/model/huginn_writer.h"
#include "muninn/model/model_loader.h"
#include "muninn/retriever/long_context_session.h"
#include "retriever/tiny_stack.h"

namespace muninn::retriever {
namespace {

using muninn::testing::ByteTokenizer;
using muninn::testing::InMemoryBank;
using muninn::testing::KeywordEmbedder;

class HuginnSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = std::move(*CreateCpuBackend({}));
    dir_ = ::testing::TempDir() + "/muninn_huginn_session_" + std::to_string(::getpid());
    model::HuginnWriterOptions o;
    o.n_embd = muninn::testing::kHeadsKv * muninn::testing::kHd;  // MHA: the bank's KV shape
    o.n_head = muninn::testing::kHeadsKv;
    o.n_ff = 32;
    o.n_vocab = muninn::testing::kVocab;
    o.mean_recurrence = 4;
    ASSERT_TRUE(model::WriteRandomHuginn(dir_, o).ok());
    model::LoadModelOptions lo;
    lo.load_tokenizer = false;
    lo.huginn_matrix_dtype = DType::kF32;
    auto m = model::LoadModel(dir_, backend_.get(), lo);
    ASSERT_TRUE(m.ok()) << m.status();
    lm_ = std::move(m).value();
    tok_ = ByteTokenizer();
    bank_ = InMemoryBank(4);
    opts_.memory_layer = 1;             // the prelude's last layer
    opts_.retrieval_layers = {6, 7};    // the coda
    opts_.chunk_tokens = 16;
    opts_.top_k = 2;
    opts_.local_window = 64;
    opts_.kv_cache_dtype = DType::kF32;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::vector<model::TokenId> Ids(const std::string& text) {
    return tok_->Encode(text, false, false);
  }

  std::unique_ptr<Backend> backend_;
  std::string dir_;
  model::LoadedModel lm_;
  std::unique_ptr<model::Tokenizer> tok_;
  std::unique_ptr<memory::MemoryBank> bank_;
  KeywordEmbedder embedder_;
  LongContextOptions opts_;
};

TEST_F(HuginnSessionTest, PreludeFeedsMemoryAndCodaRetrieves) {
  auto s = LongContextSession::Create(lm_.model.get(), tok_.get(), bank_.get(), &embedder_, opts_);
  ASSERT_TRUE(s.ok()) << s.status();
  auto& session = *s;
  const std::string doc = "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbccccccccccccccccdddddddddddddddd";
  auto stats = session->IngestText(1, doc);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->n_chunks, 4);
  ASSERT_TRUE(session->Begin(Ids("xyz"), "ddddbbbb").ok());
  const Retrieved& r = session->retrieved();
  ASSERT_EQ(r.hits.size(), 2u);
  const std::vector<float> with_memory(session->logits().begin(), session->logits().end());
  model::MemoryKV mem = r.ForLayers(opts_.retrieval_layers);
  model::ForwardOptions fo;
  fo.memory = &mem;
  auto direct = lm_.model->Forward(Ids("xyz"), nullptr, fo);
  ASSERT_TRUE(direct.ok()) << direct.status();
  for (size_t i = 0; i < with_memory.size(); ++i) {
    ASSERT_NEAR(with_memory[i], direct->logits.data_as<float>()[i], 1e-4f);
  }
  auto plain = lm_.model->Forward(Ids("xyz"), nullptr, {});
  ASSERT_TRUE(plain.ok());
  double diff = 0;
  for (size_t i = 0; i < with_memory.size(); ++i) {
    diff += std::fabs(with_memory[i] - plain->logits.data_as<float>()[i]);
  }
  EXPECT_GT(diff, 1e-3);

  LongContextOptions small = opts_;
  small.local_window = 24;
  auto s2 = LongContextSession::Create(lm_.model.get(), tok_.get(), bank_.get(), &embedder_, small);
  ASSERT_TRUE(s2.ok()) << s2.status();
  ASSERT_TRUE((*s2)->Begin(Ids("abcdabcdabcdabcdabcd"), "abcd").ok());
  auto sampler = *model::Sampler::Create(model::SamplerOptions::Greedy());
  GenerateOptions go;
  go.max_tokens = 30;
  go.stop_at_eos = false;
  auto g = (*s2)->Generate(go, sampler);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->tokens.size(), 30u);
}

}  // namespace
}  // namespace muninn::retriever
