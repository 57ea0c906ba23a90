// RuntimeEngine::RequestStop (the server's shutdown deadline) on a tiny random Huginn folder with
// the model's own hidden states as the embedder: an ingest in progress stops between two slices
// and stays listed as a partial document; later model work is refused.
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include <gtest/gtest.h>

#include "muninn/model/huginn_writer.h"
#include "tools/src/runtime.h"
#include "tools/src/server_runtime_engine.h"

namespace muninn::tools::server {
namespace {

namespace fs = std::filesystem;

TEST(RuntimeEngineStopTest, StopInterruptsAnIngestBetweenSlicesAndKeepsItPartial) {
  const std::string dir = ::testing::TempDir() + "/muninn_engine_stop_" + std::to_string(::getpid());
  fs::create_directories(dir + "/model");
  const fs::path src = std::string(MUNINN_SOURCE_DIR) + "/tests/data/huginn_tiny";
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(src / f, fs::path(dir) / "model" / f, fs::copy_options::overwrite_existing);
  }
  model::HuginnWriterOptions ho;
  ho.write_config = false;
  ASSERT_TRUE(model::WriteRandomHuginn(dir + "/model", ho).ok());
  std::ofstream(dir + "/config.json") << R"({"model": ")" << dir << R"(/model", "embedder": "hidden",
      "long_context": {"memory_layer": 1, "retrieval_layers": [6, 7], "chunk_tokens": 16,
                       "top_k": 2, "local_window": 256}})";
  RuntimeFlags flags;
  flags.config = dir + "/config.json";
  flags.bank = dir + "/bank";
  flags.threads = 1;
  auto rt = Runtime::Open(flags);
  ASSERT_TRUE(rt.ok()) << rt.status();

  RuntimeEngine* engine_ptr = nullptr;
  int slices_seen = 0;
  RuntimeEngineOptions eo;
  eo.bank_dir = flags.bank;
  eo.ingest_slice_windows = 2;  // 32 tokens a slice
  eo.on_ingest_slice = [&](uint64_t id, int64_t done) {
    ++slices_seen;
    if (id == 2 && done == 32) engine_ptr->RequestStop();  // the shutdown deadline passes here
  };
  auto engine = RuntimeEngine::Create(std::move(*rt), eo);
  ASSERT_TRUE(engine.ok()) << engine.status();
  engine_ptr = engine->get();

  std::string text;
  for (int i = 0; i < 120; ++i) text += "word" + std::to_string(i) + " and more. ";
  auto first = (*engine)->Ingest("first", text);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->id, 1u);
  EXPECT_GT(first->tokens, 96);  // several slices
  EXPECT_EQ(slices_seen, static_cast<int>((first->tokens + 31) / 32));

  auto second = (*engine)->Ingest("second", text);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable) << second.status();
  EXPECT_NE(second.status().ToString().find("after 32 of"), std::string::npos) << second.status();

  auto docs = (*engine)->ListDocuments();
  ASSERT_TRUE(docs.ok());
  ASSERT_EQ(docs->size(), 2u);
  EXPECT_EQ((*docs)[0].name, "first");
  EXPECT_EQ((*docs)[0].chunks, (first->tokens + 15) / 16);
  EXPECT_EQ((*docs)[1].name, "second (partial)");
  EXPECT_EQ((*docs)[1].chunks, 2);

  // New model work is refused and leaves nothing behind.
  EXPECT_EQ((*engine)->Ingest("third", text).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ((*engine)->Embed(std::vector<std::string>{"x"}).status().code(),
            StatusCode::kUnavailable);
  EXPECT_EQ((*engine)->ListDocuments()->size(), 2u);
  EXPECT_TRUE((*engine)->Close().ok());
  engine->reset();
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace
}  // namespace muninn::tools::server
