// Bounded input reading and text checks: `muninn ingest` refuses directories, empty and binary
// files and inputs over --max-input-bytes before it loads a model or touches the bank.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/memory/memory_test_util.h"
#include "tests/tools/run_cli.h"
#include "tools/src/app_config.h"
#include "tools/src/text_input.h"

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

TEST(InputLimitsTest, CheckTextInputRejectsEmptyAndBinary) {
  EXPECT_TRUE(CheckTextInput("In the beginning", "t", false, "").ok());
  EXPECT_TRUE(CheckTextInput("caf\xc3\xa9 na\xc3\xafve \xe2\x82\xac \xf0\x9f\x98\x80", "t", false, "").ok());
  EXPECT_EQ(CheckTextInput("", "t", false, "").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckTextInput(" \n\t", "t", true, "").code(), StatusCode::kInvalidArgument);
  const std::string nul("text\0more", 9);
  const Status s = CheckTextInput(nul, "'f'", false, "Pass --binary-ok");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.ToString().find("offset 4"), std::string::npos) << s;
  EXPECT_NE(s.ToString().find("--binary-ok"), std::string::npos) << s;
  EXPECT_TRUE(CheckTextInput(nul, "'f'", true, "").ok());
  std::string noise;
  for (int i = 0; i < 1000; ++i) noise.push_back(static_cast<char>(0x80 + (i * 37) % 128));
  EXPECT_EQ(CheckTextInput(noise, "t", false, "").code(), StatusCode::kInvalidArgument);
  // A little Latin-1 in an English text is still text.
  std::string latin1(200, 'a');
  latin1[50] = static_cast<char>(0xe9);
  EXPECT_TRUE(CheckTextInput(latin1, "t", false, "").ok());
  EXPECT_EQ(CountInvalidUtf8Bytes("\xc0\xaf"), 2u);          // overlong '/'
  EXPECT_EQ(CountInvalidUtf8Bytes("\xed\xa0\x80"), 3u);      // a surrogate
  EXPECT_EQ(CountInvalidUtf8Bytes("ok\xe2\x82"), 2u);        // truncated at the end
}

TEST(InputLimitsTest, IngestRefusesBadInputBeforeTouchingTheBank) {
  TempDir dir("ingest_inputs");
  const std::string bank = dir.path() + "/bank";
  const std::string empty = Write(dir.path(), "empty.txt", "");
  const std::string binary = Write(dir.path(), "blob.bin", std::string("\x7f" "ELF\0\0\1", 7));
  const std::string text = Write(dir.path(), "text.txt", std::string(64, 'x'));
  std::string out;
  EXPECT_EQ(RunCli({"ingest", dir.path(), "--bank", bank}, &out), 2);
  EXPECT_EQ(RunCli({"ingest", empty, "--bank", bank}, &out), 2);
  EXPECT_EQ(RunCli({"ingest", "/dev/null", "--bank", bank}, &out), 2);
  EXPECT_EQ(RunCli({"ingest", binary, "--bank", bank}, &out), 2);
  EXPECT_EQ(RunCli({"ingest", text, "--max-input-bytes", "63", "--bank", bank}, &out), 1);
  EXPECT_EQ(RunCli({"ingest", "/dev/zero", "--max-input-bytes", "4096", "--bank", bank}, &out), 1);
  // One bad file among good ones stops the command before anything is stored.
  EXPECT_EQ(RunCli({"ingest", text, empty, "--bank", bank}, &out), 2);
  EXPECT_FALSE(std::filesystem::exists(bank));
}

}  // namespace
}  // namespace muninn::tools
