#include "muninn/tools/summarizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "muninn/tools/evals.h"
#include "retriever/tiny_stack.h"
#include "tools/src/app_config.h"

namespace muninn::tools {
namespace {

using muninn::testing::ByteTokenizer;
using muninn::testing::InMemoryBank;
using muninn::testing::KeywordEmbedder;
using muninn::testing::TinyModel;

class SummarizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = std::move(*CreateCpuBackend({}));
    model_ = TinyModel(backend_.get());
    tok_ = ByteTokenizer();
    bank_ = InMemoryBank(4);
    retriever::LongContextOptions o;
    o.memory_layer = 1;
    o.retrieval_layers = {1, 3};
    o.chunk_tokens = 32;
    o.top_k = 2;
    o.local_window = 512;
    session_ = std::move(*retriever::LongContextSession::Create(model_.get(), tok_.get(), bank_.get(),
                                                                &embedder_, o));
  }
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<model::Tokenizer> tok_;
  std::unique_ptr<memory::MemoryBank> bank_;
  KeywordEmbedder embedder_;
  std::unique_ptr<retriever::LongContextSession> session_;
};

TEST_F(SummarizerTest, CoversEverySectionThenMerges) {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "abcd dcba line " + std::to_string(i) + ".\n";
  SummarizerOptions o;
  o.section_tokens = 200;
  o.section_summary_tokens = 8;
  o.max_tokens = 8;
  std::vector<std::string> stages;
  int64_t ingested = 0;
  std::string streamed;
  auto r = Summarize(*session_, model::ChatTemplate::Plain(), text, o,
                     [&](std::string_view stage, int64_t done, int64_t total) {
                       if (stages.empty() || stages.back() != stage) stages.emplace_back(stage);
                       if (stage == "ingest") ingested = done;
                       EXPECT_LE(done, total);
                     },
                     [&](std::string_view p) { streamed += p; });
  ASSERT_TRUE(r.ok()) << r.status();
  const int64_t n = static_cast<int64_t>(text.size());  // one byte per token
  EXPECT_EQ(r->n_tokens, n);
  EXPECT_EQ(r->n_sections, (n + 199) / 200);
  EXPECT_EQ(static_cast<int64_t>(r->section_summaries.size()), r->n_sections);
  EXPECT_EQ(ingested, n);
  EXPECT_EQ(bank_->Stats().n_tokens, n);
  EXPECT_EQ(stages, (std::vector<std::string>{"ingest", "sections", "merge"}));
  EXPECT_EQ(streamed, r->summary);
}

TEST_F(SummarizerTest, EmptyDocumentIsAClearError) {
  auto r = Summarize(*session_, model::ChatTemplate::Plain(), " \n\t ", SummarizerOptions{});
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("empty"), std::string_view::npos);
}

TEST_F(SummarizerTest, AnyBytesAreAccepted) {
  std::string junk;
  for (int i = 0; i < 300; ++i) junk += static_cast<char>((i * 37) & 0xff);
  SummarizerOptions o;
  o.section_tokens = 128;
  o.section_summary_tokens = 4;
  o.max_tokens = 4;
  auto r = Summarize(*session_, model::ChatTemplate::Plain(), junk, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->n_sections, 3);
}

// RunPasskey on the tiny stack: one trial per (length, depth, trial) in order, each tagged with
// the length it was asked for (what the per-length tally groups by), the bank reset before each,
// and the key found in the retrieved chunks whenever the keyword embedder can see it.
TEST_F(SummarizerTest, PasskeyTrialsAreTaggedWithTheirRequestedLength) {
  PasskeyOptions o;
  o.lengths = {600, 900};
  o.depths = {0.0, 0.5};
  o.trials = 2;
  o.local_tokens = 128;
  int resets = 0;
  int seen = 0;
  auto r = RunPasskey(*session_, o,
                      [&] {
                        ++resets;
                        std::set<memory::DocumentId> docs;
                        for (const auto& c : bank_->ListChunks()) docs.insert(c.doc_id);
                        for (auto d : docs) RETURN_IF_ERROR(bank_->DeleteDocument(d).status());
                        return Status::Ok();
                      },
                      [&](const PasskeyTrial&) { ++seen; });
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 8u);
  EXPECT_EQ(resets, 8);
  EXPECT_EQ(seen, 8);
  for (size_t i = 0; i < r->size(); ++i) {
    const PasskeyTrial& t = (*r)[i];
    EXPECT_EQ(t.requested_length, i < 4 ? 600 : 900) << i;
    EXPECT_NEAR(static_cast<double>(t.length), static_cast<double>(t.requested_length), 100.0);
    EXPECT_EQ(t.depth, (i / 2) % 2 == 0 ? 0.0 : 0.5) << i;
    EXPECT_EQ(t.key.size(), 5u);
    EXPECT_FALSE(t.key_in_window) << i;  // depth <= 0.5 of >= 600 tokens, window 128
    EXPECT_LE(t.retrieved_chunks, session_->options().top_k);
    EXPECT_EQ(ToJson(t)["requested_length"], t.requested_length);
  }
  PasskeyOptions bad = o;
  bad.lengths.clear();
  EXPECT_EQ(RunPasskey(*session_, bad, {}, {}).status().code(), StatusCode::kInvalidArgument);
}

TEST(PasskeyPromptTest, KeySitsAtTheRequestedDepth) {
  auto tok = ByteTokenizer();
  for (double depth : {0.0, 0.5, 1.0}) {
    auto p = BuildPasskeyPrompt(*tok, 3000, depth, 256, 42);
    ASSERT_TRUE(p.ok());
    const std::string all = p->prefix_text + p->window_text;
    EXPECT_EQ(p->key.size(), 5u);
    const size_t at = all.find("The pass key is " + p->key);
    ASSERT_NE(at, std::string::npos);
    EXPECT_NEAR(static_cast<double>(at) / static_cast<double>(all.size()), depth, 0.1);
    EXPECT_EQ(p->window_text.size(), 256u);  // one byte per token
    EXPECT_NE(p->window_text.find("What is the pass key?"), std::string::npos);
    EXPECT_NEAR(static_cast<double>(all.size()), 3000.0, 200.0);
  }
  // Different seeds give different keys.
  EXPECT_NE(BuildPasskeyPrompt(*tok, 1000, 0.5, 256, 1)->key, BuildPasskeyPrompt(*tok, 1000, 0.5, 256, 2)->key);
}

TEST(AppConfigTest, ParsesAndRejects) {
  const auto dir = std::filesystem::temp_directory_path() / ("muninn_cfg_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& body) {
    const auto p = (dir / "c.json").string();
    std::ofstream(p) << body;
    return p;
  };
  auto ok = LoadAppConfig(write(R"({"model": "/m.gguf", "embedder": "hidden",
      "long_context": {"memory_layer": 3, "retrieval_layers": [3, 5], "chunk_tokens": 64,
                       "memory_position": "before_window"},
      "bank": {"kv_dtype": "q8_0"}, "summarize": {"max_tokens": 10}})"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->model_path, "/m.gguf");
  EXPECT_EQ(ok->long_context.memory_layer, 3);
  EXPECT_EQ(ok->long_context.retrieval_layers, (std::vector<int32_t>{3, 5}));
  EXPECT_EQ(ok->long_context.memory_position, retriever::MemoryPosition::kBeforeWindow);
  EXPECT_EQ(ok->bank_kv_dtype, DType::kQ8_0);
  EXPECT_EQ(ok->summarize.max_tokens, 10);
  EXPECT_FALSE(LoadAppConfig(write("[1, 2]")).ok());
  EXPECT_FALSE(LoadAppConfig(write(R"({"embedder": "hidden"})")).ok());  // no model
  EXPECT_FALSE(LoadAppConfig(write(R"({"model": "m", "long_context": {"chunk_tokens": "x"}})")).ok());
  EXPECT_FALSE(LoadAppConfig(write(R"({"model": "m", "bank": {"kv_dtype": "q4_K"}})")).ok());
  EXPECT_FALSE(LoadAppConfig(write(R"({"model": "m", "long_context": {"memory_position": "top"}})")).ok());
  EXPECT_EQ(LoadAppConfig((dir / "missing.json").string()).status().code(), StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace muninn::tools
