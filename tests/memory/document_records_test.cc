// The bank's document catalog: ids handed out by the bank, partial documents after an
// interrupted ingest, persistence, and the record byte format.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "memory/src/chunk_store.h"
#include "memory/src/document_records.h"
#include "muninn/memory/memory_bank.h"
#include "tests/memory/memory_test_util.h"

namespace muninn::memory {
namespace {

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

void AppendDoc(MemoryBank& bank, DocumentId doc, int n_chunks) {
  std::vector<std::unique_ptr<OwnedChunk>> owned;
  std::vector<ChunkInput> in;
  for (int i = 0; i < n_chunks; ++i) {
    owned.push_back(std::make_unique<OwnedChunk>(doc, i * 4, 4, 16, 1, 16));
    in.push_back(owned.back()->Input());
  }
  ASSERT_TRUE(bank.Append(in).ok());
}

TEST(DocumentRecordsTest, IdsComeFromTheBankAndAreNeverReused) {
  TempDir dir("docs_ids");
  {
    auto bank = MemoryBank::Open(Options(dir.path())).value();
    EXPECT_EQ(bank->NextDocumentId(), 1u);
    // Chunks written without a record (a bank from before records, or a killed writer) and an
    // internal document with a reserved id.
    AppendDoc(*bank, 1, 2);
    AppendDoc(*bank, 3, 1);
    AppendDoc(*bank, ~DocumentId{0}, 1);
  }
  auto bank = MemoryBank::Open(Options(dir.path())).value();
  EXPECT_EQ(bank->NextDocumentId(), 4u);
  const DocumentId a = bank->BeginDocument("a.txt").value();
  EXPECT_EQ(a, 4u);
  AppendDoc(*bank, a, 3);
  // The ingest of `a` is "killed" here: no PutDocument(kComplete).
  const DocumentId b = bank->BeginDocument("b.txt").value();
  EXPECT_EQ(b, 5u);
  DocumentRecord rb = bank->GetDocument(b).value();
  rb.state = DocumentState::kComplete;
  rb.tokens = 12;
  ASSERT_TRUE(bank->PutDocument(rb).ok());
  ASSERT_TRUE(bank->Close().ok());

  bank = MemoryBank::Open(Options(dir.path())).value();
  const std::vector<DocumentRecord> docs = bank->ListDocuments();
  ASSERT_EQ(docs.size(), 4u);  // 1, 3 (no record), 4 (partial), 5 (complete); never ~0
  EXPECT_EQ(docs[0].id, 1u);
  EXPECT_FALSE(docs[0].has_record);
  EXPECT_EQ(docs[0].n_chunks, 2);
  EXPECT_EQ(docs[1].id, 3u);
  EXPECT_EQ(docs[2].id, 4u);
  EXPECT_EQ(docs[2].name, "a.txt");
  EXPECT_EQ(docs[2].state, DocumentState::kPartial);
  EXPECT_EQ(docs[2].n_chunks, 3);
  EXPECT_EQ(docs[3].name, "b.txt");
  EXPECT_EQ(docs[3].state, DocumentState::kComplete);
  EXPECT_EQ(docs[3].tokens, 12);
  EXPECT_EQ(docs[3].n_chunks, 0);

  // Deleting the newest documents, record and all, does not give their ids back.
  EXPECT_EQ(bank->DeleteDocument(5).value(), 0);
  EXPECT_EQ(bank->DeleteDocument(4).value(), 3);
  EXPECT_EQ(bank->GetDocument(4).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(bank->Close().ok());
  bank = MemoryBank::Open(Options(dir.path())).value();
  EXPECT_EQ(bank->ListDocuments().size(), 2u);
  EXPECT_EQ(bank->BeginDocument("c").value(), 6u);
  auto report = bank->Verify().value();
  EXPECT_TRUE(report.ok()) << report.messages.front();
}

TEST(DocumentRecordsTest, PutDocumentRaisesTheNextIdAndChecksItsInput) {
  TempDir dir("docs_put");
  auto bank = MemoryBank::Open(Options(dir.path())).value();
  DocumentRecord r;
  r.id = 41;
  r.name = "migrated";
  r.state = DocumentState::kComplete;
  ASSERT_TRUE(bank->PutDocument(r).ok());
  EXPECT_EQ(bank->NextDocumentId(), 42u);
  r.id = 0;
  EXPECT_EQ(bank->PutDocument(r).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bank->BeginDocument(std::string(5000, 'x')).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(bank->NextDocumentId(), 42u);
}

TEST(DocumentRecordsTest, RecordFormatRoundTripsAndRejectsDamage) {
  DocumentRecord r;
  r.id = 7;
  r.name = "na\xc3\xafve.txt";
  r.tokens = 1234;
  r.state = DocumentState::kComplete;
  const std::string bytes = internal::EncodeDocumentRecord(r);
  auto back = internal::DecodeDocumentRecord(bytes).value();
  EXPECT_EQ(back.id, 7u);
  EXPECT_EQ(back.name, r.name);
  EXPECT_EQ(back.tokens, 1234);
  EXPECT_EQ(back.state, DocumentState::kComplete);
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    EXPECT_EQ(internal::DecodeDocumentRecord(bytes.substr(0, cut)).status().code(),
              StatusCode::kDataLoss);
  }
  std::string flipped = bytes;
  flipped[10] ^= 1;
  EXPECT_EQ(internal::DecodeDocumentRecord(flipped).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(internal::ParseDocumentKey(internal::DocumentKey(0x0102030405060708ull)).value(),
            0x0102030405060708ull);
  EXPECT_EQ(internal::DecodeDocumentState(internal::EncodeDocumentState(99)).value(), 99u);
}

TEST(DocumentRecordsTest, ACorruptRecordStopsOpenWithDataLoss) {
  TempDir dir("docs_corrupt");
  {
    auto bank = MemoryBank::Open(Options(dir.path())).value();
    ASSERT_TRUE(bank->BeginDocument("x").ok());
  }
  {
    internal::ChunkStore::OpenOptions so;
    so.path = dir.path();
    auto store = internal::ChunkStore::Open(so).value();
    std::string v;
    ASSERT_TRUE(store->Get(internal::Cf::kDefault, internal::DocumentKey(1), &v).ok());
    v[v.size() - 5] ^= 1;
    auto b = store->NewBatch();
    b.Put(internal::Cf::kDefault, internal::DocumentKey(1), v);
    ASSERT_TRUE(store->Write(&b).ok());
  }
  auto bank = MemoryBank::Open(Options(dir.path()));
  ASSERT_FALSE(bank.ok());
  EXPECT_EQ(bank.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(bank.status().ToString().find("document 1"), std::string::npos) << bank.status();
}

}  // namespace
}  // namespace muninn::memory
