// `muninn generate` / `muninn logits` on a tiny random Huginn folder (the committed text files of
// tests/data/huginn_tiny plus weights from HuginnWriter): --steps, --init, --exit, --kv-share,
// --warm-start, --draft-steps run and bad values are errors.
#include <algorithm>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include "muninn/model/huginn_writer.h"
#include "muninn/tools/commands.h"
#include "tests/tools/run_cli.h"

namespace muninn::tools {
namespace {

using testing::RunCli;

class HuginnCommandsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(::testing::TempDir() + "/muninn_huginn_cli_" +
                           std::to_string(::getpid()));
    std::filesystem::create_directories(*dir_);
    const std::filesystem::path src = std::string(MUNINN_SOURCE_DIR) + "/tests/data/huginn_tiny";
    for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"}) {
      std::filesystem::copy_file(src / f, std::filesystem::path(*dir_) / f,
                                 std::filesystem::copy_options::overwrite_existing);
    }
    model::HuginnWriterOptions o;
    o.write_config = false;
    const Status st = model::WriteRandomHuginn(*dir_, o);
    MUNINN_CHECK(st.ok()) << st;
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    std::filesystem::remove_all(*dir_, ec);
    delete dir_;
  }
  static std::string* dir_;
};
std::string* HuginnCommandsTest::dir_ = nullptr;

TEST_F(HuginnCommandsTest, GenerateRunsWithEveryRecurrenceOption) {
  const std::vector<std::vector<std::string>> variants = {
      {"--steps", "8"},
      {"--steps", "8", "--init", "zero", "--warm-start", "off"},
      {"--steps", "16", "--exit", "kl", "--exit-min-steps", "2", "--exit-not-in-prefill"},
      {"--steps", "16", "--exit", "latent-diff", "--kv-share", "s4"},
      {"--steps", "8", "--draft-steps", "2", "--lookahead", "4", "--init", "zero"},
      {"--steps", "4", "--warm-start", "raw", "--kv-compress", "compress-s16"},
  };
  for (const auto& v : variants) {
    std::vector<std::string> args = {"generate", "-m", *dir_, "-p", "Huginn and", "-n", "8",
                                     "--temp", "0", "--ignore-eos", "-t", "1"};
    args.insert(args.end(), v.begin(), v.end());
    std::string out;
    EXPECT_EQ(RunCli(args, &out), 0) << v[0] << " " << v[1] << ": " << out;
  }
}

TEST_F(HuginnCommandsTest, LogitsTakesStepsAndInit) {
  std::string out;
  ASSERT_EQ(RunCli({"logits", "-m", *dir_, "--ids", "1,17,42", "--steps", "4", "--init", "zero",
                    "--top", "3", "-t", "1"},
                   &out),
            0)
      << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 3) << out;
}

TEST_F(HuginnCommandsTest, BadRecurrenceValuesAreErrors) {
  std::string out;
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"--exit", "bogus"}, {"--init", "gauss"}, {"--kv-share", "s0"},
           {"--draft-steps", "2", "--warm-start", "normed"}, {"--draft-steps", "2", "--exit", "kl"}}) {
    std::vector<std::string> args = {"generate", "-m", *dir_, "-p", "hi", "-n", "2", "-t", "1"};
    args.insert(args.end(), bad.begin(), bad.end());
    EXPECT_EQ(RunCli(args, &out), 1) << bad[0] << " " << bad[1];
  }
}

}  // namespace
}  // namespace muninn::tools
