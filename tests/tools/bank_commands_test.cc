#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "memory/src/chunk_store.h"
#include "memory/src/codec.h"
#include "muninn/memory/memory_bank.h"
#include "muninn/tools/commands.h"
#include "tests/memory/memory_test_util.h"
#include "tests/tools/run_cli.h"

namespace muninn::tools {
namespace {

using memory::testing::OwnedChunk;

using testing::RunCli;

std::vector<memory::ChunkId> MakeBank(const std::string& dir) {
  memory::MemoryBankOptions o;
  o.path = dir;
  o.dim = 16;
  o.n_head_kv = 1;
  o.head_dim = 32;
  o.sync = memory::SyncPolicy::kNoSync;
  auto bank = memory::MemoryBank::Open(o).value();
  std::vector<std::unique_ptr<OwnedChunk>> chunks;
  std::vector<memory::ChunkInput> in;
  for (int i = 0; i < 6; ++i) {
    chunks.push_back(std::make_unique<OwnedChunk>(i % 2, i * 4, 4, 16, 1, 32));
    in.push_back(chunks.back()->Input());
  }
  auto ids = bank->Append(in).value();
  EXPECT_TRUE(bank->Close().ok());
  return ids;
}

TEST(BankCommandsTest, StatsVerifyCompactOnAHealthyBank) {
  memory::testing::TempDir dir("cli_bank");
  MakeBank(dir.path());
  std::string out;
  ASSERT_EQ(RunCli({"bank", "stats", "--bank", dir.path(), "--json"}, &out), 0) << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["chunks"], 6);
  EXPECT_EQ(j["documents"], 2);
  EXPECT_EQ(j["tokens"], 24);
  EXPECT_EQ(j["kv_dtype"], "bf16");
  EXPECT_EQ(j["index_recovery"], "loaded");
  ASSERT_EQ(RunCli({"bank", "stats", "--bank", dir.path()}, &out), 0);
  EXPECT_NE(out.find("6 in 2 documents"), std::string::npos) << out;
  ASSERT_EQ(RunCli({"bank", "verify", "--bank", dir.path()}, &out), 0) << out;
  EXPECT_NE(out.find("OK: 6 records checked"), std::string::npos) << out;
  ASSERT_EQ(RunCli({"bank", "compact", "--bank", dir.path()}, &out), 0) << out;
  ASSERT_EQ(RunCli({"bank", "verify", "--bank", dir.path(), "--json"}, &out), 0) << out;
  EXPECT_EQ(nlohmann::json::parse(out)["ok"], true);
}

TEST(BankCommandsTest, VerifyFailsOnACorruptChunkAndAMissingBank) {
  memory::testing::TempDir dir("cli_corrupt");
  auto ids = MakeBank(dir.path());
  {
    memory::internal::ChunkStore::OpenOptions so;
    so.path = dir.path();
    auto store = memory::internal::ChunkStore::Open(so).value();
    std::string v;
    const std::string key = memory::internal::IdKey(ids[2]);
    ASSERT_TRUE(store->Get(memory::internal::Cf::kContent, key, &v).ok());
    v[1] = static_cast<char>(v[1] ^ 1);
    auto b = store->NewBatch();
    b.Put(memory::internal::Cf::kContent, key, v);
    ASSERT_TRUE(store->Write(&b).ok());
  }
  std::string out;
  EXPECT_EQ(RunCli({"bank", "verify", "--bank", dir.path()}, &out), 1);
  EXPECT_NE(out.find("FAILED"), std::string::npos) << out;
  EXPECT_NE(out.find("chunk " + std::to_string(ids[2])), std::string::npos) << out;
  EXPECT_EQ(RunCli({"bank", "stats", "--bank", dir.path() + "/missing"}, &out), 1);
}

TEST(BankCommandsTest, CommandsNeverCreateOrRepairUnasked) {
  memory::testing::TempDir dir("cli_damaged");
  std::string out;
  // A typo'd path stays missing.
  EXPECT_EQ(RunCli({"bank", "stats", "--bank", dir.path() + "/missing"}, &out), 1);
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/missing"));
  // A bank that lost CURRENT: every command fails and leaves it as it was, until repair.
  const std::string bank = dir.path() + "/bank";
  MakeBank(bank);
  ASSERT_EQ(RunCli({"bank", "compact", "--bank", bank}, &out), 0) << out;
  std::filesystem::remove(bank + "/CURRENT");
  EXPECT_EQ(RunCli({"bank", "stats", "--bank", bank}, &out), 1);
  EXPECT_EQ(RunCli({"bank", "verify", "--bank", bank}, &out), 1);
  EXPECT_EQ(RunCli({"bank", "documents", "--bank", bank}, &out), 1);
  EXPECT_FALSE(std::filesystem::exists(bank + "/CURRENT"));
  const std::string backup = dir.path() + "/backup";
  ASSERT_EQ(RunCli({"bank", "repair", "--bank", bank, "--backup", backup}, &out), 0) << out;
  EXPECT_NE(out.find("0 problems"), std::string::npos) << out;
  EXPECT_TRUE(std::filesystem::exists(backup));
  EXPECT_FALSE(std::filesystem::exists(backup + "/CURRENT"));  // the untouched original
  ASSERT_EQ(RunCli({"bank", "stats", "--bank", bank, "--json"}, &out), 0) << out;
  EXPECT_EQ(nlohmann::json::parse(out)["chunks"], 6);
  // The backup path must be new.
  EXPECT_EQ(RunCli({"bank", "repair", "--bank", bank, "--backup", backup}, &out), 1);
}

TEST(BankCommandsTest, ACorruptTableFailsStatsLikeVerify) {
  memory::testing::TempDir dir("cli_sst");
  MakeBank(dir.path());
  std::string out;
  ASSERT_EQ(RunCli({"bank", "compact", "--bank", dir.path()}, &out), 0) << out;
  int corrupted = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    if (e.path().extension() != ".sst") continue;
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20);
    f.put('\x5a');
    ++corrupted;
  }
  ASSERT_GT(corrupted, 0);
  EXPECT_EQ(RunCli({"bank", "verify", "--bank", dir.path()}, &out), 1);
  EXPECT_EQ(RunCli({"bank", "stats", "--bank", dir.path()}, &out), 1);
  EXPECT_EQ(RunCli({"bank", "documents", "--bank", dir.path()}, &out), 1);
}

}  // namespace
}  // namespace muninn::tools
