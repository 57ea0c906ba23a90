#include "muninn/memory/memory_bank.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "memory/src/chunk_store.h"
#include "memory/src/codec.h"
#include "muninn/core/fp16.h"
#include "tests/memory/memory_test_util.h"

namespace muninn::memory {
namespace {

using testing::OwnedChunk;
using testing::TempDir;

constexpr int64_t kDim = 32;
constexpr int64_t kHeads = 2;
constexpr int64_t kHeadDim = 32;

MemoryBankOptions InMemory(const std::string& factory = "Flat", DType dtype = DType::kBF16) {
  MemoryBankOptions o;
  o.in_memory = true;
  o.dim = kDim;
  o.n_head_kv = kHeads;
  o.head_dim = kHeadDim;
  o.kv_dtype = dtype;
  o.index_factory = factory;
  return o;
}

MemoryBankOptions OnDisk(const std::string& path, const std::string& factory = "Flat") {
  MemoryBankOptions o = InMemory(factory);
  o.in_memory = false;
  o.path = path;
  o.sync = SyncPolicy::kNoSync;  // durability is the crash test's business; keep these fast
  return o;
}

// Appends chunks for docs [0, n_docs) with `per_doc` chunks each, interleaved by position.
std::vector<std::unique_ptr<OwnedChunk>> MakeChunks(int n_docs, int per_doc, int64_t n_tokens = 4,
                                                    uint64_t seed = 1) {
  std::vector<std::unique_ptr<OwnedChunk>> out;
  for (int p = 0; p < per_doc; ++p) {
    for (int d = 0; d < n_docs; ++d) {
      out.push_back(std::make_unique<OwnedChunk>(d, p * n_tokens, n_tokens, kDim, kHeads, kHeadDim,
                                                 seed));
    }
  }
  return out;
}

std::vector<ChunkId> AppendAll(MemoryBank& bank,
                               const std::vector<std::unique_ptr<OwnedChunk>>& chunks,
                               size_t batch = 16) {
  std::vector<ChunkId> ids;
  for (size_t b = 0; b < chunks.size(); b += batch) {
    std::vector<ChunkInput> in;
    for (size_t i = b; i < std::min(chunks.size(), b + batch); ++i) in.push_back(chunks[i]->Input());
    auto r = bank.Append(in);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return ids;
    ids.insert(ids.end(), r->begin(), r->end());
  }
  return ids;
}

struct Ref {
  ChunkId id;
  const OwnedChunk* c;
};

bool RefMatches(const Ref& r, const SearchFilter& f) {
  if (f.before_id != 0 && r.id >= f.before_id) return false;
  if (f.before_position >= 0 && r.c->position >= f.before_position) return false;
  if (!f.doc_ids.empty() &&
      std::find(f.doc_ids.begin(), f.doc_ids.end(), r.c->doc) == f.doc_ids.end()) {
    return false;
  }
  return true;
}

// Exact top-k in double precision.
std::vector<std::pair<double, ChunkId>> BruteForce(const std::vector<Ref>& refs, const float* q,
                                                   int64_t k, const SearchFilter& f) {
  std::vector<std::pair<double, ChunkId>> all;
  for (const Ref& r : refs) {
    if (!RefMatches(r, f)) continue;
    double s = 0;
    for (int64_t i = 0; i < kDim; ++i) s += static_cast<double>(q[i]) * r.c->embedding[static_cast<size_t>(i)];
    all.emplace_back(s, r.id);
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  if (static_cast<int64_t>(all.size()) > k) all.resize(static_cast<size_t>(k));
  return all;
}

std::vector<float> RandomQueries(int n, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::normal_distribution<float> nd;
  std::vector<float> q(static_cast<size_t>(n * kDim));
  for (auto& x : q) x = nd(rng);
  return q;
}

std::vector<SearchFilter> SomeFilters() {
  std::vector<SearchFilter> fs(6);
  fs[1].doc_ids = {2};
  fs[2].before_position = 40;
  fs[3].before_id = 100;
  fs[4].doc_ids = {0, 3};
  fs[4].before_position = 60;
  fs[5].doc_ids = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};  // set path
  return fs;
}

TEST(MemoryBankTest, AppendAndGetRoundTripPerDType) {
  for (DType dt : {DType::kBF16, DType::kF16, DType::kQ8_0}) {
    SCOPED_TRACE(std::string(DTypeName(dt)));
    auto bank = MemoryBank::Open(InMemory("Flat", dt)).value();
    OwnedChunk c(7, 128, 5, kDim, kHeads, kHeadDim, 3);
    std::vector<ChunkInput> in{c.Input()};
    auto ids = bank->Append(in);
    ASSERT_TRUE(ids.ok()) << ids.status();
    ASSERT_EQ(ids->size(), 1u);
    auto rec = bank->GetChunk((*ids)[0]);
    ASSERT_TRUE(rec.ok()) << rec.status();
    EXPECT_EQ(rec->info.doc_id, 7u);
    EXPECT_EQ(rec->info.position, 128);
    EXPECT_EQ(rec->info.n_tokens, 5);
    EXPECT_EQ(rec->tokens, c.tokens);
    EXPECT_EQ(rec->text, c.text);
    EXPECT_EQ(rec->embedding, c.embedding);
    ASSERT_EQ(rec->k.shape(), c.k.shape());
    // Per-dtype bound: half precision rounding, or q8_0's half step of max|block|/127.
    for (const auto& [got, want] : {std::pair{&rec->k, &c.k}, std::pair{&rec->v, &c.v}}) {
      for (int64_t row = 0; row < want->numel() / kHeadDim; ++row) {
        const float* w = want->data_as<float>() + row * kHeadDim;
        const float* g = got->data_as<float>() + row * kHeadDim;
        float amax = 0;
        for (int64_t i = 0; i < kHeadDim; ++i) amax = std::max(amax, std::fabs(w[i]));
        for (int64_t i = 0; i < kHeadDim; ++i) {
          const float tol = dt == DType::kBF16  ? std::fabs(w[i]) / 256.0f + 1e-30f
                            : dt == DType::kF16 ? std::fabs(w[i]) / 2048.0f + 1e-7f
                                                : amax / 127.0f * 0.5f + amax * 1e-3f;
          ASSERT_LE(std::fabs(g[i] - w[i]), tol) << "row " << row << " i " << i;
        }
      }
    }
    auto report = bank->Verify();
    ASSERT_TRUE(report.ok());
    EXPECT_TRUE(report->ok()) << report->messages.front();
  }
}

TEST(MemoryBankTest, AppendRejectsBadChunksAndStoresNothing) {
  auto bank = MemoryBank::Open(InMemory()).value();
  OwnedChunk good(0, 0, 4, kDim, kHeads, kHeadDim);
  OwnedChunk bad_dim(0, 4, 4, kDim + 1, kHeads, kHeadDim);
  OwnedChunk bad_k(0, 8, 4, kDim, kHeads + 1, kHeadDim);
  std::vector<ChunkInput> in{good.Input(), bad_dim.Input()};
  EXPECT_EQ(bank->Append(in).status().code(), StatusCode::kInvalidArgument);
  in = {good.Input(), bad_k.Input()};
  EXPECT_EQ(bank->Append(in).status().code(), StatusCode::kInvalidArgument);
  ChunkInput nan = good.Input();
  std::vector<float> e = good.embedding;
  e[3] = std::nanf("");
  nan.embedding = e;
  in = {nan};
  EXPECT_EQ(bank->Append(in).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bank->Stats().n_chunks, 0);
  in = {good.Input()};
  EXPECT_TRUE(bank->Append(in).ok());
  EXPECT_EQ(bank->Stats().n_chunks, 1);
}

TEST(MemoryBankTest, FlatSearchEqualsBruteForceUnderFilters) {
  auto bank = MemoryBank::Open(InMemory()).value();
  auto chunks = MakeChunks(5, 40);
  auto ids = AppendAll(*bank, chunks);
  std::vector<Ref> refs;
  for (size_t i = 0; i < ids.size(); ++i) refs.push_back({ids[i], chunks[i].get()});
  const int nq = 12;
  const auto q = RandomQueries(nq, 5);
  for (const SearchFilter& f : SomeFilters()) {
    for (int64_t k : {1, 8, 50}) {
      auto res = bank->Search(q, nq, k, f, /*count_retrievals=*/false);
      ASSERT_TRUE(res.ok()) << res.status();
      for (int qi = 0; qi < nq; ++qi) {
        const auto want = BruteForce(refs, q.data() + qi * kDim, k, f);
        const auto& got = (*res)[static_cast<size_t>(qi)];
        ASSERT_EQ(got.size(), want.size()) << "k " << k;
        for (size_t j = 0; j < want.size(); ++j) {
          EXPECT_EQ(got[j].id, want[j].second) << "query " << qi << " rank " << j;
          EXPECT_NEAR(got[j].score, want[j].first, 1e-4);
        }
      }
    }
  }
}

TEST(MemoryBankTest, HnswSearchHasHighRecallUnderFilters) {
  MemoryBankOptions o = InMemory("HNSW32");
  auto bank = MemoryBank::Open(o).value();
  auto chunks = MakeChunks(4, 200);
  auto ids = AppendAll(*bank, chunks, 200);
  std::vector<Ref> refs;
  for (size_t i = 0; i < ids.size(); ++i) refs.push_back({ids[i], chunks[i].get()});
  const int nq = 40;
  const auto q = RandomQueries(nq, 9);
  for (const SearchFilter& f : SomeFilters()) {
    auto res = bank->Search(q, nq, 8, f, false);
    ASSERT_TRUE(res.ok()) << res.status();
    int64_t hit = 0, total = 0;
    for (int qi = 0; qi < nq; ++qi) {
      const auto want = BruteForce(refs, q.data() + qi * kDim, 8, f);
      std::set<ChunkId> got_ids;
      for (const auto& h : (*res)[static_cast<size_t>(qi)]) {
        got_ids.insert(h.id);
        const Ref& r = refs[static_cast<size_t>(h.id - ids[0])];
        EXPECT_TRUE(RefMatches(r, f)) << "hit violates the filter";
      }
      for (const auto& w : want) hit += got_ids.count(w.second);
      total += static_cast<int64_t>(want.size());
    }
    EXPECT_GE(static_cast<double>(hit) / static_cast<double>(total), 0.9);
  }
}

TEST(MemoryBankTest, IvfStagesUntilTrainedAndStaysConsistent) {
  MemoryBankOptions o = InMemory("IVF4,Flat");
  o.train_min_chunks = 300;
  auto bank = MemoryBank::Open(o).value();
  auto chunks = MakeChunks(2, 100);  // 200 < 300: exact staging
  auto ids = AppendAll(*bank, chunks);
  std::vector<Ref> refs;
  for (size_t i = 0; i < ids.size(); ++i) refs.push_back({ids[i], chunks[i].get()});
  const auto q = RandomQueries(4, 2);
  auto res = bank->Search(q, 4, 8, {}, false);
  ASSERT_TRUE(res.ok());
  for (int qi = 0; qi < 4; ++qi) {
    const auto want = BruteForce(refs, q.data() + qi * kDim, 8, {});
    for (size_t j = 0; j < want.size(); ++j) EXPECT_EQ((*res)[static_cast<size_t>(qi)][j].id, want[j].second);
  }
  auto more = MakeChunks(2, 100, 4, /*seed=*/2);
  auto ids2 = AppendAll(*bank, more);  // crosses the training threshold
  ASSERT_EQ(ids2.size(), 200u);
  SearchFilter f;
  f.doc_ids = {1};
  res = bank->Search(q, 4, 8, f, false);
  ASSERT_TRUE(res.ok());
  for (const auto& hits : *res) {
    EXPECT_EQ(hits.size(), 8u);
    for (const auto& h : hits) EXPECT_EQ(h.doc_id, 1u);
  }
  auto report = bank->Verify();
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok());
}

TEST(MemoryBankTest, FetchKVIsChronologicalAndMatchesStoredValues) {
  auto bank = MemoryBank::Open(InMemory()).value();
  std::vector<std::unique_ptr<OwnedChunk>> chunks;
  for (int i = 0; i < 6; ++i) {
    chunks.push_back(std::make_unique<OwnedChunk>(1, i * 10, 3 + i, kDim, kHeads, kHeadDim, 4));
  }
  auto ids = AppendAll(*bank, chunks, 2);
  const std::vector<ChunkId> ask = {ids[4], ids[1], ids[4], ids[2]};
  auto kv = bank->FetchKV(ask);
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_EQ(kv->ids, (std::vector<ChunkId>{ids[1], ids[2], ids[4]}));
  EXPECT_EQ(kv->lengths, (std::vector<int64_t>{4, 5, 7}));
  ASSERT_EQ(kv->k.shape(), (Shape{kHeads, 16, kHeadDim}));
  auto raw = bank->FetchKV(ask, DType::kBF16);
  ASSERT_TRUE(raw.ok());
  int64_t t0 = 0;
  for (size_t c = 0; c < kv->ids.size(); ++c) {
    auto rec = bank->GetChunk(kv->ids[c]).value();
    for (int64_t h = 0; h < kHeads; ++h) {
      for (int64_t t = 0; t < kv->lengths[c]; ++t) {
        for (int64_t i = 0; i < kHeadDim; ++i) {
          const int64_t src = (h * kv->lengths[c] + t) * kHeadDim + i;
          const int64_t dst = (h * 16 + t0 + t) * kHeadDim + i;
          ASSERT_EQ(kv->k.data_as<float>()[dst], rec.k.data_as<float>()[src]);
          ASSERT_EQ(kv->v.data_as<float>()[dst], rec.v.data_as<float>()[src]);
          ASSERT_EQ(raw->k.data_as<uint16_t>()[dst], Fp32ToBf16(rec.k.data_as<float>()[src]));
        }
      }
    }
    t0 += kv->lengths[c];
  }
  const std::vector<ChunkId> unknown = {ids[0], 999};
  EXPECT_EQ(bank->FetchKV(unknown).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(bank->FetchKV(ask, DType::kF16).status().code(), StatusCode::kInvalidArgument);
}

TEST(MemoryBankTest, CountersPersistAcrossReopen) {
  TempDir dir("counters");
  std::vector<ChunkId> ids;
  std::map<ChunkId, uint32_t> counts;
  {
    auto bank = MemoryBank::Open(OnDisk(dir.path())).value();
    auto chunks = MakeChunks(1, 20);
    ids = AppendAll(*bank, chunks);
    const auto q = RandomQueries(5, 3);
    auto res = bank->Search(q, 5, 3).value();
    for (const auto& hits : res) {
      for (const auto& h : hits) ++counts[h.id];
    }
    for (const auto& [id, c] : counts) EXPECT_EQ(bank->Info(id)->retrieval_count, c);
    ASSERT_TRUE(bank->Close().ok());
  }
  auto bank = MemoryBank::Open(OnDisk(dir.path())).value();
  for (ChunkId id : ids) {
    EXPECT_EQ(bank->Info(id)->retrieval_count, counts.count(id) ? counts[id] : 0u);
  }
}

TEST(MemoryBankTest, DeleteDocumentRemovesItEverywhere) {
  for (const char* factory : {"Flat", "HNSW32"}) {
    SCOPED_TRACE(factory);
    TempDir dir("delete");
    MemoryBankOptions o = OnDisk(dir.path(), factory);
    o.max_tombstone_fraction = 0.9;  // keep HNSW tombstones around to test them
    auto chunks = MakeChunks(3, 30);
    {
      auto bank = MemoryBank::Open(o).value();
      AppendAll(*bank, chunks);
      auto n = bank->DeleteDocument(1);
      ASSERT_TRUE(n.ok());
      EXPECT_EQ(*n, 30);
      EXPECT_EQ(*bank->DeleteDocument(1), 0);
      EXPECT_EQ(bank->Stats().n_chunks, 60);
      EXPECT_EQ(bank->Stats().n_documents, 2);
      if (std::string(factory) == "HNSW32") {
        EXPECT_EQ(bank->Stats().index_tombstones, 30);
      }
      const auto q = RandomQueries(10, 1);
      auto res = bank->Search(q, 10, 20).value();
      for (const auto& hits : res) {
        EXPECT_EQ(hits.size(), 20u);
        for (const auto& h : hits) EXPECT_NE(h.doc_id, 1u);
      }
      auto report = bank->Verify().value();
      EXPECT_TRUE(report.ok()) << report.messages.front();
      ASSERT_TRUE(bank->Compact().ok());
      EXPECT_EQ(bank->Stats().index_tombstones, 0);
      EXPECT_EQ(bank->Stats().index_ntotal, 60);
    }
    auto bank = MemoryBank::Open(o).value();
    EXPECT_EQ(bank->Stats().n_chunks, 60);
    auto report = bank->Verify().value();
    EXPECT_TRUE(report.ok()) << report.messages.front();
  }
}

TEST(MemoryBankTest, IndexFileMissingCorruptOrStaleIsRepairedOnOpen) {
  TempDir dir("index");
  MemoryBankOptions o = OnDisk(dir.path());
  o.index_persist_interval = 1000;
  auto chunks = MakeChunks(2, 50);
  std::vector<ChunkId> ids;
  const std::string index_path = dir.path() + "/index.mnx";
  const std::string stale_copy = dir.path() + "/stale.mnx";
  {
    auto bank = MemoryBank::Open(o).value();
    std::vector<std::unique_ptr<OwnedChunk>> first;
    ids = AppendAll(*bank, chunks);
    ASSERT_TRUE(bank->Flush().ok());
    std::filesystem::copy_file(index_path, stale_copy);
    auto more = bank->DeleteDocument(0);
    ASSERT_TRUE(more.ok());
  }
  std::vector<Ref> refs;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (chunks[i]->doc != 0) refs.push_back({ids[i], chunks[i].get()});
  }
  const auto q = RandomQueries(6, 11);
  auto check = [&](const char* what) {
    SCOPED_TRACE(what);
    auto bank = MemoryBank::Open(o);
    ASSERT_TRUE(bank.ok()) << bank.status();
    auto report = (*bank)->Verify().value();
    EXPECT_TRUE(report.ok()) << report.messages.front();
    auto res = (*bank)->Search(q, 6, 8, {}, false).value();
    for (int qi = 0; qi < 6; ++qi) {
      const auto want = BruteForce(refs, q.data() + qi * kDim, 8, {});
      ASSERT_EQ(res[static_cast<size_t>(qi)].size(), want.size());
      for (size_t j = 0; j < want.size(); ++j) EXPECT_EQ(res[static_cast<size_t>(qi)][j].id, want[j].second);
    }
  };
  check("normal reopen");
  std::filesystem::copy_file(stale_copy, index_path, std::filesystem::copy_options::overwrite_existing);
  check("stale index (deleted chunks still in it)");
  {
    std::fstream f(index_path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    f.put('\x5a');
  }
  check("corrupt index");
  std::filesystem::remove(index_path);
  check("missing index");
  {
    std::ofstream f(index_path, std::ios::binary | std::ios::trunc);
    f << "MNIX";
  }
  check("truncated index");
}

TEST(MemoryBankTest, ShapeMismatchOnOpenIsAClearError) {
  TempDir dir("shape");
  {
    auto bank = MemoryBank::Open(OnDisk(dir.path())).value();
  }
  MemoryBankOptions o = OnDisk(dir.path());
  o.dim = kDim + 1;
  auto r = MemoryBank::Open(o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("dim"), std::string_view::npos) << r.status();
  o = OnDisk(dir.path());
  o.kv_dtype = DType::kF16;
  EXPECT_EQ(MemoryBank::Open(o).status().code(), StatusCode::kInvalidArgument);
  o = OnDisk(dir.path());
  o.dim = 0;
  o.n_head_kv = 0;
  o.head_dim = 0;
  o.kv_dtype = DType::kCount;
  o.index_factory.clear();
  auto ok = MemoryBank::Open(o);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->dim(), kDim);
  MemoryBankOptions missing = OnDisk(dir.path() + "/nope");
  missing.create_if_missing = false;
  EXPECT_FALSE(MemoryBank::Open(missing).ok());
  MemoryBankOptions bad_factory = OnDisk(dir.path() + "/bad");
  bad_factory.index_factory = "NoSuchIndex";
  EXPECT_EQ(MemoryBank::Open(bad_factory).status().code(), StatusCode::kInvalidArgument);
}

TEST(MemoryBankTest, CorruptStoredValuesAreReportedNotTrusted) {
  TempDir dir("corrupt");
  auto chunks = MakeChunks(1, 3);
  std::vector<ChunkId> ids;
  {
    auto bank = MemoryBank::Open(OnDisk(dir.path())).value();
    ids = AppendAll(*bank, chunks);
  }
  auto poke = [&](internal::Cf cf, ChunkId id, size_t at) {
    internal::ChunkStore::OpenOptions so;
    so.path = dir.path();
    auto store = internal::ChunkStore::Open(so).value();
    std::string v;
    ASSERT_TRUE(store->Get(cf, internal::IdKey(id), &v).ok());
    v[at] = static_cast<char>(v[at] ^ 0x40);
    auto b = store->NewBatch();
    b.Put(cf, internal::IdKey(id), v);
    ASSERT_TRUE(store->Write(&b).ok());
  };
  poke(internal::Cf::kKv, ids[1], internal::kKvHeaderBytes + 7);  // payload bit flip
  {
    auto bank = MemoryBank::Open(OnDisk(dir.path())).value();
    auto report = bank->Verify().value();
    EXPECT_EQ(report.problems, 1);
    EXPECT_EQ(bank->GetChunk(ids[1]).status().code(), StatusCode::kDataLoss);
    EXPECT_TRUE(bank->GetChunk(ids[0]).ok());
  }
  poke(internal::Cf::kKv, ids[2], 10);  // header bit flip: even FetchKV refuses it
  {
    auto bank = MemoryBank::Open(OnDisk(dir.path())).value();
    const std::vector<ChunkId> one = {ids[2]};
    EXPECT_EQ(bank->FetchKV(one).status().code(), StatusCode::kDataLoss);
  }
  poke(internal::Cf::kRecords, ids[0], 9);  // a record: the bank will not open on it
  auto r = MemoryBank::Open(OnDisk(dir.path()));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status();
}

TEST(MemoryBankTest, FrequencyEvictionKeepsTheRetrievedAndTheNewest) {
  MemoryBankOptions o = InMemory();
  o.capacity_tokens = 40;  // 10 chunks of 4 tokens
  auto bank = MemoryBank::Open(o).value();
  auto chunks = MakeChunks(1, 10);
  auto ids = AppendAll(*bank, chunks, 1);
  ASSERT_EQ(ids.size(), 10u);
  // Retrieve chunk 3 and 5 (by their own embeddings) so they have the highest counts.
  for (int i : {3, 5, 5}) {
    auto res = bank->Search(chunks[static_cast<size_t>(i)]->embedding, 1, 1).value();
    ASSERT_EQ(res[0][0].id, ids[static_cast<size_t>(i)]);
  }
  OwnedChunk extra(0, 1000, 4, kDim, kHeads, kHeadDim, 99);
  std::vector<ChunkInput> in{extra.Input()};
  ASSERT_TRUE(bank->Append(in).ok());
  // N=10: oldest 1 always goes, newest 1 protected, middle by count (0s oldest first) to 5 gone.
  std::set<ChunkId> live;
  for (const auto& c : bank->ListChunks()) live.insert(c.id);
  const std::set<ChunkId> want = {ids[3], ids[5], ids[7], ids[8], ids[9], ids[9] + 1};
  EXPECT_EQ(live, want);
  EXPECT_EQ(bank->Stats().evicted_chunks, 5);
  EXPECT_TRUE(bank->Verify()->ok());
}

TEST(MemoryBankTest, FifoHalfAndNoEviction) {
  MemoryBankOptions o = InMemory();
  o.capacity_tokens = 40;
  o.eviction = EvictionPolicy::kFifoHalf;
  auto bank = MemoryBank::Open(o).value();
  auto chunks = MakeChunks(1, 11);
  auto ids = AppendAll(*bank, chunks, 1);
  auto list = bank->ListChunks();
  ASSERT_EQ(list.size(), 6u);  // the oldest 5 went (usage 20 <= 40/2), then the 11th came in
  EXPECT_EQ(list.front().id, ids[5]);
  o.eviction = EvictionPolicy::kNone;
  auto strict = MemoryBank::Open(o).value();
  auto ids2 = AppendAll(*strict, MakeChunks(1, 10), 1);
  OwnedChunk extra(0, 1000, 4, kDim, kHeads, kHeadDim);
  std::vector<ChunkInput> in{extra.Input()};
  EXPECT_EQ(strict->Append(in).status().code(), StatusCode::kResourceExhausted);
  OwnedChunk huge(0, 2000, 41, kDim, kHeads, kHeadDim);
  in = {huge.Input()};
  EXPECT_EQ(bank->Append(in).status().code(), StatusCode::kResourceExhausted);
}

TEST(MemoryBankTest, CapacityInBytesEvictsToo) {
  MemoryBankOptions o = InMemory();
  auto probe = MemoryBank::Open(o).value();
  OwnedChunk c(0, 0, 4, kDim, kHeads, kHeadDim);
  std::vector<ChunkInput> in{c.Input()};
  ASSERT_TRUE(probe->Append(in).ok());
  const int64_t per_chunk = probe->Stats().stored_bytes;
  o.capacity_bytes = per_chunk * 8;
  o.eviction = EvictionPolicy::kFifoHalf;
  auto bank = MemoryBank::Open(o).value();
  AppendAll(*bank, MakeChunks(1, 20), 1);
  EXPECT_LE(bank->Stats().stored_bytes, o.capacity_bytes);
  EXPECT_GT(bank->Stats().evicted_chunks, 0);
}

TEST(MemoryBankTest, ConcurrentReadersWithOneWriter) {
  auto bank = MemoryBank::Open(InMemory()).value();
  auto seed_chunks = MakeChunks(2, 10);
  AppendAll(*bank, seed_chunks);
  auto chunks = MakeChunks(2, 60, 4, /*seed=*/7);
  std::atomic<bool> done{false};
  std::atomic<int64_t> searches{0};
  std::atomic<int> alive{3};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&, r] {
      // Counts this reader out however it leaves (a failed ASSERT returns early).
      std::shared_ptr<void> out(nullptr, [&](void*) { alive.fetch_sub(1); });
      const auto q = RandomQueries(2, static_cast<uint64_t>(r));
      while (!done.load()) {
        SearchFilter f;
        if (r == 1) f.doc_ids = {1};
        auto res = bank->Search(q, 2, 4, f);
        ASSERT_TRUE(res.ok()) << res.status();
        std::vector<ChunkId> hit_ids;
        for (const auto& hits : *res) {
          for (const auto& h : hits) hit_ids.push_back(h.id);
        }
        auto kv = bank->FetchKV(hit_ids);
        ASSERT_TRUE(kv.ok()) << kv.status();
        ASSERT_TRUE(std::is_sorted(kv->ids.begin(), kv->ids.end()));
        (void)bank->Stats();
        searches.fetch_add(1);
      }
    });
  }
  for (size_t i = 0; i < chunks.size(); i += 4) {
    // Interleave: let the readers complete a search between any two writes.
    const int64_t seen = searches.load();
    while (searches.load() == seen && alive.load() > 0) std::this_thread::yield();
    std::vector<ChunkInput> in;
    for (size_t j = i; j < i + 4; ++j) in.push_back(chunks[j]->Input());
    ASSERT_TRUE(bank->Append(in).ok());
    if (i % 40 == 0) {
      ASSERT_TRUE(bank->DeleteDocument(100).ok());
    }
  }
  done.store(true);
  for (auto& t : readers) t.join();
  EXPECT_GE(searches.load(), 30);
  EXPECT_EQ(bank->Stats().n_chunks, 140);
  EXPECT_TRUE(bank->Verify()->ok());
}

TEST(MemoryBankTest, ClosedBankRefusesWork) {
  auto bank = MemoryBank::Open(InMemory()).value();
  ASSERT_TRUE(bank->Close().ok());
  ASSERT_TRUE(bank->Close().ok());
  const auto q = RandomQueries(1, 1);
  EXPECT_EQ(bank->Search(q, 1, 1).status().code(), StatusCode::kFailedPrecondition);
  OwnedChunk c(0, 0, 4, kDim, kHeads, kHeadDim);
  std::vector<ChunkInput> in{c.Input()};
  EXPECT_EQ(bank->Append(in).status().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace muninn::memory
