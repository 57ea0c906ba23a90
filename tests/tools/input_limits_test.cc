// Bounded input reading: `muninn ingest` refuses directories and inputs over --max-input-bytes
// (files, /dev/zero) before it loads a model or touches the bank.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/memory/memory_test_util.h"
#include "tests/tools/run_cli.h"
#include "tools/src/app_config.h"

namespace muninn::tools {
namespace {

using memory::testing::TempDir;
using testing::RunCli;

std::string Write(const std::string& dir, const std::string& name, const std::string& bytes) {
  const std::string p = dir + "/" + name;
  std::ofstream(p, std::ios::binary) << bytes;
  return p;
}

TEST(InputLimitsTest, ReadFileBoundedStopsAtTheLimit) {
  TempDir dir("read_bounded");
  const std::string p = Write(dir.path(), "a.txt", std::string(100, 'a'));
  EXPECT_EQ(ReadFileBounded(p, 100).value().size(), 100u);
  auto over = ReadFileBounded(p, 99);
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(over.status().ToString().find("--max-input-bytes"), std::string::npos);
  // A stream without a size is cut one byte past the limit, not read to the end.
  EXPECT_EQ(ReadFileBounded("/dev/zero", 1 << 20).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(ReadFileBounded("/dev/null", 10).value(), "");
  EXPECT_EQ(ReadFileBounded(dir.path(), 10).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadFileBounded(dir.path() + "/missing", 10).status().code(), StatusCode::kNotFound);
}

TEST(InputLimitsTest, IngestRefusesOversizedInputBeforeTouchingTheBank) {
  TempDir dir("ingest_inputs");
  const std::string bank = dir.path() + "/bank";
  const std::string text = Write(dir.path(), "text.txt", std::string(64, 'x'));
  std::string out;
  EXPECT_EQ(RunCli({"ingest", dir.path(), "--bank", bank}, &out), 2);
  EXPECT_EQ(RunCli({"ingest", text, "--max-input-bytes", "63", "--bank", bank}, &out), 1);
  EXPECT_EQ(RunCli({"ingest", "/dev/zero", "--max-input-bytes", "4096", "--bank", bank}, &out), 1);
  EXPECT_FALSE(std::filesystem::exists(bank));
}

}  // namespace
}  // namespace muninn::tools
