// `muninn bench -d/--depth` on a tiny random Huginn folder (the committed text files of
// tests/data/huginn_tiny plus weights from HuginnWriter; trained context 256): each test runs after
// a D-token context is in the KV cache and is named llama-bench's way ("tg4 @ d32"); bad depths and
// depths past the trained context are clear errors.
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "muninn/model/huginn_writer.h"
#include "tests/tools/run_cli.h"

namespace muninn::tools {
namespace {

using testing::RunCli;

class BenchDepthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/muninn_bench_depth_test_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_);
    const std::filesystem::path src = std::string(MUNINN_SOURCE_DIR) + "/tests/data/huginn_tiny";
    for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"}) {
      std::filesystem::copy_file(src / f, std::filesystem::path(dir_) / f,
                                 std::filesystem::copy_options::overwrite_existing);
    }
    model::HuginnWriterOptions o;
    o.write_config = false;
    ASSERT_TRUE(model::WriteRandomHuginn(dir_, o).ok());
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  // Runs `bench -m <model> args...` and returns the exit code; stdout in *out, stderr in *err.
  int Bench(std::vector<std::string> args, std::string* out, std::string* err) {
    args.insert(args.begin(), {"bench", "-m", dir_, "-t", "1", "-r", "1"});
    ::testing::internal::CaptureStderr();
    const int rc = RunCli(args, out);
    *err = ::testing::internal::GetCapturedStderr();
    return rc;
  }
  std::string dir_;
};

TEST_F(BenchDepthTest, RunsEachTestAtEachDepth) {
  std::string out, err;
  ASSERT_EQ(Bench({"-p", "8", "-n", "4", "-d", "0,32", "--json"}, &out, &err), 0) << err;
  const auto j = nlohmann::json::parse(out);
  ASSERT_EQ(j.size(), 4u);
  const char* names[] = {"pp8", "tg4", "pp8 @ d32", "tg4 @ d32"};
  const int64_t depths[] = {0, 0, 32, 32};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(j[i]["test"], names[i]);
    EXPECT_EQ(j[i]["n_depth"], depths[i]);
    EXPECT_GT(j[i]["avg_ts"].get<double>(), 0.0);
  }
  // The alias, a shorter depth after a longer one (a rollback of its prefix), a longer one after
  // that (extending it), and the table.
  ASSERT_EQ(Bench({"-p", "0", "-n", "2", "--depth", "40,16,24"}, &out, &err), 0) << err;
  EXPECT_NE(out.find("tg2 @ d40"), std::string::npos) << out;
  EXPECT_NE(out.find("tg2 @ d16"), std::string::npos) << out;
  EXPECT_NE(out.find("tg2 @ d24"), std::string::npos) << out;
  ASSERT_EQ(Bench({"-p", "0", "-n", "2", "--n-depth=8", "--json"}, &out, &err), 0) << err;
  EXPECT_EQ(nlohmann::json::parse(out)[0]["test"], "tg2 @ d8");
}

TEST_F(BenchDepthTest, BadDepthIsAClearError) {
  std::string out, err;
  EXPECT_NE(Bench({"-n", "2", "--depth=-5"}, &out, &err), 0);
  EXPECT_NE(err.find("--depth"), std::string::npos) << err;
  EXPECT_NE(Bench({"-n", "2", "-d", "4k"}, &out, &err), 0);
  EXPECT_NE(err.find("--depth"), std::string::npos) << err;
  EXPECT_NE(Bench({"-n", "2", "-d", "8,,x"}, &out, &err), 0);
  // -d is for ppN/tgN, not for the long-context benchmark.
  EXPECT_EQ(Bench({"--memory-depth", "100", "-d", "8"}, &out, &err), 2);
  EXPECT_NE(err.find("-d/--depth does not apply to --memory-depth"), std::string::npos) << err;
}

// -k/--cache-type picks the KV cache's dtype (llama-bench's -ctk/-ctv); it shows in the backend
// column and the JSON. The tiny model's 16-wide heads cannot hold q8_0 blocks of 32: a clear error.
TEST_F(BenchDepthTest, CacheTypeSetsTheKvCacheDtype) {
  std::string out, err;
  ASSERT_EQ(Bench({"-p", "0", "-n", "2", "-k", "f32", "--json"}, &out, &err), 0) << err;
  const auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j[0]["cache_type"], "f32");
  EXPECT_NE(j[0]["backend"].get<std::string>().find(" kv f32"), std::string::npos) << out;
  ASSERT_EQ(Bench({"-p", "0", "-n", "2", "--json"}, &out, &err), 0) << err;
  EXPECT_EQ(nlohmann::json::parse(out)[0]["cache_type"], "f16");
  EXPECT_EQ(Bench({"-p", "0", "-n", "2", "-k", "f8"}, &out, &err), 2);
  EXPECT_NE(err.find("unknown --cache-type 'f8'"), std::string::npos) << err;
  EXPECT_NE(Bench({"-p", "0", "-n", "2", "--cache-type", "q8_0"}, &out, &err), 0);
  EXPECT_NE(err.find("head dim that is a multiple of 32, got 16"), std::string::npos) << err;
  EXPECT_NE(Bench({"-p", "0", "-n", "2", "-k", "q4_0"}, &out, &err), 0);
  EXPECT_NE(err.find("KV cache dtype must be f16, f32 or q8_0"), std::string::npos) << err;
  EXPECT_EQ(Bench({"--memory-depth", "100", "-k", "q8_0"}, &out, &err), 2);
  EXPECT_NE(err.find("--cache-type (the config's kv_cache sets it) does not apply"),
            std::string::npos)
      << err;
}

TEST_F(BenchDepthTest, DepthPastTheTrainedContextIsAClearError) {
  std::string out, err;
  // 250 + 8 > 256 positions.
  EXPECT_EQ(Bench({"-p", "0", "-n", "8", "-d", "0,250"}, &out, &err), 2);
  EXPECT_NE(err.find("exceeds the model's trained context of 256 tokens"), std::string::npos)
      << err;
  EXPECT_NE(err.find("--allow-ctx-overflow"), std::string::npos) << err;
  EXPECT_TRUE(out.empty()) << out;
  // Exactly the trained context is fine; past it only when asked for.
  EXPECT_EQ(Bench({"-p", "0", "-n", "8", "-d", "248"}, &out, &err), 0) << err;
  EXPECT_EQ(Bench({"-p", "0", "-n", "8", "-d", "260", "--allow-ctx-overflow", "--json"}, &out,
                  &err),
            0)
      << err;
  EXPECT_EQ(nlohmann::json::parse(out)[0]["n_depth"], 260);
}

}  // namespace
}  // namespace muninn::tools
