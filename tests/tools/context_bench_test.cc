// `muninn bench --memory-depth N` on a tiny random Huginn folder (the committed text files of
// tests/data/huginn_tiny plus weights from HuginnWriter) with the model's own hidden states as the
// embedder: the JSON report counts what was ingested, the bank exists on disk while it runs and is
// removed afterwards, decode at depth attends to top-k chunks; bad flags are clear errors.
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "muninn/model/huginn_writer.h"
#include "muninn/tools/commands.h"
#include "tests/tools/run_cli.h"
#if defined(MUNINN_HAVE_CUDA)
#include "muninn/core/cuda_backend.h"
#endif

namespace muninn::tools {
namespace {

using testing::RunCli;

class ContextBenchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/muninn_ctxbench_test_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_ + "/model");
    const std::filesystem::path src = std::string(MUNINN_SOURCE_DIR) + "/tests/data/huginn_tiny";
    for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"}) {
      std::filesystem::copy_file(src / f, std::filesystem::path(dir_) / "model" / f,
                                 std::filesystem::copy_options::overwrite_existing);
    }
    model::HuginnWriterOptions o;
    o.write_config = false;
    ASSERT_TRUE(model::WriteRandomHuginn(dir_ + "/model", o).ok());
    // Memory layer: the prelude's last layer; retrieval: the coda (layers 6 and 7 of 2/4/2).
    config_ = dir_ + "/config.json";
    std::ofstream(config_) << R"({"model": ")" << dir_ << R"(/model", "embedder": "hidden",
        "long_context": {"memory_layer": 1, "retrieval_layers": [6, 7], "chunk_tokens": 16,
                         "top_k": 2, "local_window": 256}})";
    text_ = dir_ + "/text.txt";
    std::ofstream t(text_);
    for (int i = 0; i < 200; ++i) t << "In the beginning was the word " << i << ". ";
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string dir_, config_, text_;
};

TEST_F(ContextBenchTest, ReportsIngestBankAndDecodeAtDepth) {
  std::string out;
  const int rc = RunCli({"bench", "--memory-depth", "200", "--config", config_, "--text", text_,
                         "-n", "4", "-r", "1", "--prompt-tokens", "8", "-t", "1", "--json"},
                        &out);
  ASSERT_EQ(rc, 0) << out;
  const auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["ingest_tokens"], 200);
  EXPECT_EQ(j["ingest_chunks"], 13);  // ceil(200 / 16)
  EXPECT_GT(j["ingest_tokens_per_s"].get<double>(), 0.0);
  EXPECT_GT(j["peak_rss_bytes"].get<int64_t>(), j["rss_before_ingest_bytes"].get<int64_t>() / 2);
  EXPECT_GE(j["bank_disk_bytes"].get<int64_t>(), j["bank_kv_bytes"].get<int64_t>());
  EXPECT_GT(j["bank_kv_bytes"].get<int64_t>(), 0);
  EXPECT_EQ(j["decode_depthN_memory_tokens"], 32);  // top-2 chunks of 16 tokens
  EXPECT_GT(j["decode_depth0_ts"].get<double>(), 0.0);
  EXPECT_GT(j["decode_depthN_ts"].get<double>(), 0.0);
  EXPECT_EQ(j["n_gen"], 4);
  EXPECT_NE(j["device"].get<std::string>().find("cpu"), std::string::npos) << j["device"];
  // Depth 0 and depth N alternate, one pair per repetition; the ratio is the pairs' median.
  ASSERT_EQ(j["decode_pair_ratios"].size(), 1u);
  EXPECT_DOUBLE_EQ(j["decode_ratio"].get<double>(), j["decode_pair_ratios"][0].get<double>());
  EXPECT_GT(j["decode_ratio_of_means"].get<double>(), 0.0);
  // The temporary bank is gone afterwards.
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::temp_directory_path())) {
    EXPECT_NE(e.path().filename().string(), "muninn_ctxbench_" + std::to_string(::getpid()));
  }
}

TEST_F(ContextBenchTest, BadInputIsAClearError) {
  std::string out;
  // More depth than the text has tokens.
  EXPECT_EQ(RunCli({"bench", "--memory-depth", "1000000", "--config", config_, "--text", text_,
                    "-r", "1", "-t", "1"},
                   &out),
            2);
  EXPECT_EQ(RunCli({"bench", "--memory-depth", "100", "--config", config_, "--text",
                    dir_ + "/missing.txt", "-t", "1"},
                   &out),
            2);
  EXPECT_EQ(RunCli({"bench", "--memory-depth", "100", "--exact", "--config", config_}, &out), 2);
}

// --device is taken (the runtime opens the device, as ask and ingest do): without a GPU it is the
// device's own error, not a refusal of the flag.
TEST_F(ContextBenchTest, DeviceGoesToTheRuntime) {
#if defined(MUNINN_HAVE_CUDA)
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present: the benchmark would run";
#endif
  std::string out;
  ::testing::internal::CaptureStderr();
  const int rc = RunCli({"bench", "--memory-depth", "100", "--config", config_, "--text", text_,
                         "-n", "2", "-r", "1", "-t", "1", "--device", "cuda"},
                        &out);
  const std::string err = ::testing::internal::GetCapturedStderr();
#if defined(MUNINN_HAVE_CUDA)
  EXPECT_NE(err.find("UNAVAILABLE: no CUDA device"), std::string::npos) << err;
#else
  EXPECT_NE(err.find("FAILED_PRECONDITION"), std::string::npos) << err;
#endif
  EXPECT_NE(rc, 0);
  EXPECT_EQ(err.find("does not apply"), std::string::npos) << err;
}

}  // namespace
}  // namespace muninn::tools
