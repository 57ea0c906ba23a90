// Opening never creates or repairs anything by accident: a missing bank stays missing, a damaged
// one (CURRENT lost, a corrupt table) fails with DataLoss and is left byte for byte as it was,
// and MemoryBank::Repair salvages it when asked.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "muninn/memory/memory_bank.h"
#include "tests/memory/memory_test_util.h"

namespace muninn::memory {
namespace {

namespace fs = std::filesystem;
using testing::OwnedChunk;
using testing::TempDir;

MemoryBankOptions Options(const std::string& path) {
  MemoryBankOptions o;
  o.path = path;
  o.dim = 16;
  o.n_head_kv = 1;
  o.head_dim = 16;
  o.sync = SyncPolicy::kNoSync;
  return o;
}

// A bank with 8 chunks, compacted so that its rows sit in SST files.
void MakeBank(const std::string& path) {
  auto bank = MemoryBank::Open(Options(path)).value();
  std::vector<std::unique_ptr<OwnedChunk>> owned;
  std::vector<ChunkInput> in;
  for (int i = 0; i < 8; ++i) {
    owned.push_back(std::make_unique<OwnedChunk>(1, i * 4, 4, 16, 1, 16));
    in.push_back(owned.back()->Input());
  }
  ASSERT_TRUE(bank->Append(in).ok());
  ASSERT_TRUE(bank->Compact().ok());
  ASSERT_TRUE(bank->Close().ok());
}

// name -> size and modification time of every file in the directory.
std::map<std::string, std::pair<uintmax_t, fs::file_time_type>> Snapshot(const std::string& dir) {
  std::map<std::string, std::pair<uintmax_t, fs::file_time_type>> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    out[e.path().filename().string()] = {e.is_regular_file() ? e.file_size() : 0,
                                         e.last_write_time()};
  }
  return out;
}

TEST(MemoryBankOpenTest, AMissingBankIsNotFoundAndNoDirectoryIsCreated) {
  TempDir dir("open_missing");
  MemoryBankOptions o = Options(dir.path() + "/nope/bank");
  o.create_if_missing = false;
  auto bank = MemoryBank::Open(o);
  EXPECT_EQ(bank.status().code(), StatusCode::kNotFound) << bank.status();
  EXPECT_FALSE(fs::exists(dir.path() + "/nope"));
  // An empty directory is no bank either, and stays empty.
  o.path = dir.path();
  EXPECT_EQ(MemoryBank::Open(o).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(MemoryBankOpenTest, MissingCurrentIsRefusedUntouchedThenRepaired) {
  TempDir dir("open_current");
  MakeBank(dir.path());
  fs::remove(dir.path() + "/CURRENT");
  const auto before = Snapshot(dir.path());
  for (bool create : {false, true}) {
    MemoryBankOptions o = Options(dir.path());
    o.create_if_missing = create;
    auto bank = MemoryBank::Open(o);
    ASSERT_FALSE(bank.ok());
    EXPECT_EQ(bank.status().code(), StatusCode::kDataLoss) << bank.status();
    EXPECT_NE(bank.status().ToString().find("muninn bank repair"), std::string::npos);
    EXPECT_EQ(Snapshot(dir.path()), before) << "opening wrote into the damaged bank";
  }
  ASSERT_TRUE(MemoryBank::Repair(dir.path()).ok());
  auto bank = MemoryBank::Open(Options(dir.path())).value();
  EXPECT_EQ(bank->Stats().n_chunks, 8);
  auto report = bank->Verify().value();
  EXPECT_TRUE(report.ok()) << report.messages.front();
}

TEST(MemoryBankOpenTest, ACorruptTableFailsTheOpenWithDataLoss) {
  TempDir dir("open_sst");
  MakeBank(dir.path());
  int corrupted = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    if (e.path().extension() != ".sst") continue;
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(20);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x5a);
    f.seekp(20);
    f.write(&c, 1);
    ++corrupted;
  }
  ASSERT_GT(corrupted, 0);
  for (bool create : {false, true}) {
    MemoryBankOptions o = Options(dir.path());
    o.create_if_missing = create;
    auto bank = MemoryBank::Open(o);
    ASSERT_FALSE(bank.ok());
    EXPECT_EQ(bank.status().code(), StatusCode::kDataLoss) << bank.status();
  }
}

}  // namespace
}  // namespace muninn::memory
