// RuntimeEngine::RequestStop (the server's shutdown deadline) on a tiny random Huginn folder with
// the model's own hidden states as the embedder: an ingest in progress stops between two slices
// and stays listed as a partial document, a generation stops before its next token, and later
// model work is refused.
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include "muninn/model/huginn_writer.h"
#include "tools/src/runtime.h"
#include "tools/src/server_runtime_engine.h"

namespace muninn::tools::server {
namespace {

namespace fs = std::filesystem;

class RuntimeEngineStopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/muninn_engine_stop_" + std::to_string(::getpid());
    fs::create_directories(dir_ + "/model");
    const fs::path src = std::string(MUNINN_SOURCE_DIR) + "/tests/data/huginn_tiny";
    for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"}) {
      fs::copy_file(src / f, fs::path(dir_) / "model" / f, fs::copy_options::overwrite_existing);
    }
    model::HuginnWriterOptions ho;
    ho.write_config = false;
    ASSERT_TRUE(model::WriteRandomHuginn(dir_ + "/model", ho).ok());
    std::ofstream(dir_ + "/config.json") << R"({"model": ")" << dir_ << R"(/model",
        "embedder": "hidden", "long_context": {"memory_layer": 1, "retrieval_layers": [6, 7],
        "chunk_tokens": 16, "top_k": 2, "local_window": 256}})";
    for (int i = 0; i < 120; ++i) text_ += "word" + std::to_string(i) + " and more. ";
  }
  void TearDown() override {
    engine_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void Start(RuntimeEngineOptions eo) {
    RuntimeFlags flags;
    flags.config = dir_ + "/config.json";
    flags.bank = dir_ + "/bank";
    flags.threads = 1;
    auto rt = Runtime::Open(flags);
    ASSERT_TRUE(rt.ok()) << rt.status();
    eo.bank_dir = flags.bank;
    auto engine = RuntimeEngine::Create(std::move(*rt), eo);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
  }
  std::string dir_, text_;
  std::unique_ptr<RuntimeEngine> engine_;
};

TEST_F(RuntimeEngineStopTest, StopInterruptsAnIngestBetweenSlicesAndKeepsItPartial) {
  int slices_seen = 0;
  RuntimeEngineOptions eo;
  eo.ingest_slice_windows = 2;  // 32 tokens a slice
  eo.on_ingest_slice = [&](uint64_t id, int64_t done) {
    ++slices_seen;
    if (id == 2 && done == 32) engine_->RequestStop();  // the shutdown deadline passes here
  };
  Start(eo);
  auto first = engine_->Ingest("first", text_);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->id, 1u);
  EXPECT_GT(first->tokens, 96);  // several slices
  EXPECT_EQ(slices_seen, static_cast<int>((first->tokens + 31) / 32));

  auto second = engine_->Ingest("second", text_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable) << second.status();
  EXPECT_NE(second.status().ToString().find("after 32 of"), std::string::npos) << second.status();

  auto docs = engine_->ListDocuments();
  ASSERT_TRUE(docs.ok());
  ASSERT_EQ(docs->size(), 2u);
  EXPECT_EQ((*docs)[0].name, "first");
  EXPECT_EQ((*docs)[0].chunks, (first->tokens + 15) / 16);
  EXPECT_EQ((*docs)[1].name, "second (partial)");
  EXPECT_EQ((*docs)[1].chunks, 2);

  // New model work is refused and leaves nothing behind.
  EXPECT_EQ(engine_->Ingest("third", text_).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(engine_->Embed(std::vector<std::string>{"x"}).status().code(),
            StatusCode::kUnavailable);
  EXPECT_EQ(engine_->ListDocuments()->size(), 2u);
  EXPECT_TRUE(engine_->Close().ok());
}

TEST_F(RuntimeEngineStopTest, StopEndsAGenerationBeforeItsNextToken) {
  Start({});
  GenerationParams p;
  p.max_tokens = 40;
  const model::ChatMessage msg{"user", "Tell me a long story."};
  std::vector<std::string> pieces;
  auto out = engine_->Chat(std::span<const model::ChatMessage>(&msg, 1), p,
                           [&](std::string_view piece) {
                             pieces.emplace_back(piece);
                             engine_->RequestStop();  // the deadline passes mid-generation
                           });
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_GE(pieces.size(), 1u);
  EXPECT_LT(out->completion_tokens, 40);
  EXPECT_LE(out->completion_tokens, 4);  // stopped right after the first emitted piece
  EXPECT_EQ(engine_->Chat(std::span<const model::ChatMessage>(&msg, 1), p, {}).status().code(),
            StatusCode::kUnavailable);
}

}  // namespace
}  // namespace muninn::tools::server
