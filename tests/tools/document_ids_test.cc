// Document ids come from the bank (issue 13): an ingest that died part-way leaves a visible
// "NAME (partial)" document whose id is never handed out again, also when the side file of older
// versions (muninn-documents.json) is stale or gone; that file is migrated into the bank once.
// Runs `muninn ingest` and `muninn bank documents|delete` on a tiny random Huginn folder with
// the model's own hidden states as the embedder.
#include <filesystem>
#include <fstream>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "muninn/memory/memory_bank.h"
#include "muninn/model/huginn_writer.h"
#include "tests/tools/run_cli.h"

namespace muninn::tools {
namespace {

namespace fs = std::filesystem;
using testing::RunCli;

class DocumentIdsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/muninn_docids_test_" + std::to_string(::getpid());
    fs::create_directories(dir_ + "/model");
    const fs::path src = std::string(MUNINN_SOURCE_DIR) + "/tests/data/huginn_tiny";
    for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"}) {
      fs::copy_file(src / f, fs::path(dir_) / "model" / f, fs::copy_options::overwrite_existing);
    }
    model::HuginnWriterOptions o;
    o.write_config = false;
    ASSERT_TRUE(model::WriteRandomHuginn(dir_ + "/model", o).ok());
    config_ = dir_ + "/config.json";
    std::ofstream(config_) << R"({"model": ")" << dir_ << R"(/model", "embedder": "hidden",
        "long_context": {"memory_layer": 1, "retrieval_layers": [6, 7], "chunk_tokens": 16,
                         "top_k": 2, "local_window": 256}})";
    bank_ = dir_ + "/bank";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Text(const std::string& name, int words) {
    const std::string p = dir_ + "/" + name;
    std::ofstream t(p);
    for (int i = 0; i < words; ++i) t << "word" << i << " of " << name << ". ";
    return p;
  }
  // `muninn ingest FILE --json`: the document id it was given.
  uint64_t Ingest(const std::string& file) {
    std::string out;
    const int rc = RunCli({"ingest", file, "--config", config_, "--bank", bank_, "--json"}, &out);
    EXPECT_EQ(rc, 0) << out;
    if (rc != 0) return 0;
    return nlohmann::json::parse(out).at(0).at("doc_id").get<uint64_t>();
  }
  nlohmann::json Documents() {
    std::string out;
    EXPECT_EQ(RunCli({"bank", "documents", "--bank", bank_, "--json"}, &out), 0) << out;
    return nlohmann::json::parse(out);
  }
  std::string dir_, config_, bank_;
};

TEST_F(DocumentIdsTest, ANewDocumentNeverTakesTheIdOfOrphanedChunks) {
  ASSERT_EQ(Ingest(Text("a.txt", 30)), 1u);
  {
    // What a killed ingest leaves: the bank's partial record of "killed.txt" with some chunks
    // (2); and what an older muninn killed mid-ingest left: chunks with no record at all (3).
    memory::MemoryBankOptions o;
    o.path = bank_;
    o.create_if_missing = false;
    auto bank = memory::MemoryBank::Open(o).value();
    const memory::ChunkRecord c = bank->GetChunk(bank->ListChunks().at(0).id).value();
    const memory::DocumentId killed = bank->BeginDocument("killed.txt").value();
    EXPECT_EQ(killed, 2u);
    for (memory::DocumentId doc : {killed, memory::DocumentId{3}}) {
      memory::ChunkInput in;
      in.doc_id = doc;
      in.tokens = c.tokens;
      in.text = c.text;
      in.embedding = c.embedding;
      in.k = c.k;
      in.v = c.v;
      ASSERT_TRUE(bank->Append(std::span<const memory::ChunkInput>(&in, 1)).ok());
    }
    ASSERT_TRUE(bank->Close().ok());
  }
  // The side file of older versions knows only document 1 and names 3; it is migrated.
  std::ofstream(bank_ + "/muninn-documents.json")
      << R"({"1": {"name": "a.txt", "tokens": 99}, "3": {"name": "old.txt", "tokens": 16}})";

  const uint64_t b = Ingest(Text("b.txt", 20));
  EXPECT_EQ(b, 4u) << "the new document reused the id of orphaned chunks";
  EXPECT_FALSE(fs::exists(bank_ + "/muninn-documents.json"));
  EXPECT_TRUE(fs::exists(bank_ + "/muninn-documents.json.migrated"));
  nlohmann::json docs = Documents();
  ASSERT_EQ(docs.size(), 4u) << docs.dump();
  EXPECT_EQ(docs[0]["name"], dir_ + "/a.txt");
  EXPECT_GT(docs[0]["tokens"].get<int64_t>(), 0);
  EXPECT_NE(docs[0]["tokens"], 99) << "the bank's record wins over the side file";
  EXPECT_EQ(docs[1]["name"], "killed.txt (partial)");
  EXPECT_EQ(docs[1]["partial"], true);
  EXPECT_EQ(docs[1]["chunks"], 1);
  EXPECT_EQ(docs[2]["name"], "old.txt");
  EXPECT_EQ(docs[3]["id"], 4);
  EXPECT_EQ(docs[3]["name"], dir_ + "/b.txt");
  EXPECT_EQ(docs[3]["partial"], false);

  std::string out;
  ASSERT_EQ(RunCli({"bank", "delete", "--bank", bank_, "--doc", "2"}, &out), 0) << out;
  EXPECT_NE(out.find("killed.txt (partial)"), std::string::npos) << out;
  EXPECT_EQ(RunCli({"bank", "delete", "--bank", bank_, "--doc", "2"}, &out), 2);
  EXPECT_EQ(Documents().size(), 3u);
  ASSERT_EQ(RunCli({"bank", "verify", "--bank", bank_}, &out), 0) << out;
  // Ids are never reused, whatever happens to side files.
  fs::remove(bank_ + "/muninn-documents.json.migrated");
  EXPECT_EQ(Ingest(Text("c.txt", 10)), 5u);
}

TEST_F(DocumentIdsTest, APipeIsReadOnceAndIngested) {
  // A pipe can be read once: the up-front input check must not leave the ingest an empty stream.
  const std::string fifo = dir_ + "/pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::thread writer([&] {
    std::ofstream w(fifo);
    for (int i = 0; i < 40; ++i) w << "piped word " << i << ". ";
  });
  std::string out;
  const int rc = RunCli({"ingest", fifo, "--config", config_, "--bank", bank_, "--json"}, &out);
  writer.join();
  ASSERT_EQ(rc, 0) << out;
  const auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j.at(0).at("doc_id"), 1);
  EXPECT_GT(j.at(0).at("tokens").get<int64_t>(), 40);
}

}  // namespace
}  // namespace muninn::tools
