// Bank format 2: what each chunk carries depends on the memory modes — no K/V (text-only banks
// for re-read text), K/V of several layers (context memory), per-token states (kNN-LM) — and
// banks written by format 1 are refused with a clear message.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "memory/src/chunk_store.h"
#include "memory/src/codec.h"
#include "memory/src/crc32c.h"
#include "muninn/core/fp16.h"
#include "muninn/memory/memory_bank.h"
#include "tests/memory/memory_test_util.h"

namespace muninn::memory {
namespace {

using testing::TempDir;

constexpr int64_t kDim = 8;

std::vector<float> Embedding(int seed) {
  std::vector<float> e(kDim, 0.0f);
  e[static_cast<size_t>(seed % kDim)] = 1.0f;
  return e;
}

TEST(MemoryBankLayoutTest, TextOnlyBankStoresNoKvAndRefusesIt) {
  MemoryBankOptions o;
  o.in_memory = true;
  o.dim = kDim;
  auto bank = MemoryBank::Open(o);
  ASSERT_TRUE(bank.ok()) << bank.status();
  EXPECT_FALSE((*bank)->has_kv());
  EXPECT_EQ((*bank)->n_kv_layers(), 0);
  const std::vector<int32_t> tokens = {1, 2, 3};
  const std::vector<float> emb = Embedding(1);
  ChunkInput c;
  c.doc_id = 4;
  c.tokens = tokens;
  c.text = "abc";
  c.embedding = emb;
  auto ids = (*bank)->Append(std::span<const ChunkInput>(&c, 1));
  ASSERT_TRUE(ids.ok()) << ids.status();
  auto rec = (*bank)->GetChunk((*ids)[0]);
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->text, "abc");
  EXPECT_EQ(rec->tokens, tokens);
  EXPECT_FALSE(rec->k.defined());
  EXPECT_EQ((*bank)->Stats().kv_bytes, 0);
  EXPECT_EQ((*bank)->FetchKV(*ids).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*bank)->FetchStates(*ids).status().code(), StatusCode::kFailedPrecondition);
  auto report = (*bank)->Verify();
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok()) << (report->messages.empty() ? "" : report->messages[0]);
  // A chunk with K/V does not fit a text-only bank.
  auto k = Tensor::Empty(DType::kF32, {2, 3, 4});
  c.k = *k;
  c.v = *k;
  EXPECT_EQ((*bank)->Append(std::span<const ChunkInput>(&c, 1)).status().code(),
            StatusCode::kInvalidArgument);
  // n_head_kv without head_dim (or layers without heads) is not a layout.
  MemoryBankOptions bad = o;
  bad.n_head_kv = 2;
  EXPECT_EQ(MemoryBank::Open(bad).status().code(), StatusCode::kInvalidArgument);
  bad = o;
  bad.kv_layers = {3};
  EXPECT_EQ(MemoryBank::Open(bad).status().code(), StatusCode::kInvalidArgument);
  bad = o;
  bad.kv_layers = {4, 2};
  EXPECT_EQ(MemoryBank::Open(bad).status().code(), StatusCode::kInvalidArgument);
}

TEST(MemoryBankLayoutTest, SeveralLayersAndStatesRoundTripAndSurviveReopen) {
  TempDir dir("layout");
  MemoryBankOptions o;
  o.path = dir.path();
  o.dim = kDim;
  o.kv_layers = {1, 3, 4};
  o.n_head_kv = 2;
  o.head_dim = 4;
  o.kv_dtype = DType::kF16;
  o.state_dim = 6;
  o.sync = SyncPolicy::kNoSync;
  const int64_t rows = 3 * 2, nt = 5;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  auto k = *Tensor::Empty(DType::kF32, {rows, nt, 4});
  auto v = *Tensor::Empty(DType::kF32, {rows, nt, 4});
  for (int64_t i = 0; i < rows * nt * 4; ++i) {
    k.data_as<float>()[i] = nd(rng);
    v.data_as<float>()[i] = nd(rng);
  }
  std::vector<float> states(static_cast<size_t>(nt * 6));
  for (float& x : states) x = nd(rng);
  const std::vector<int32_t> next = {11, 12, 13, 14, -1};
  const std::vector<int32_t> tokens = {10, 11, 12, 13, 14};
  const std::vector<float> emb = Embedding(2);
  std::vector<ChunkId> ids;
  {
    auto bank = MemoryBank::Open(o);
    ASSERT_TRUE(bank.ok()) << bank.status();
    EXPECT_EQ((*bank)->n_kv_layers(), 3);
    ChunkInput c;
    c.doc_id = 1;
    c.tokens = tokens;
    c.text = "chunk";
    c.embedding = emb;
    c.k = k;
    c.v = v;
    c.states = states;
    c.next_tokens = next;
    // Wrong row count (one layer's worth) and missing states are refused.
    ChunkInput one = c;
    one.k = *k.Slice(0, 0, 2);
    one.v = *v.Slice(0, 0, 2);
    EXPECT_EQ((*bank)->Append(std::span<const ChunkInput>(&one, 1)).status().code(),
              StatusCode::kInvalidArgument);
    ChunkInput no_states = c;
    no_states.states = {};
    EXPECT_EQ((*bank)->Append(std::span<const ChunkInput>(&no_states, 1)).status().code(),
              StatusCode::kInvalidArgument);
    auto r = (*bank)->Append(std::span<const ChunkInput>(&c, 1));
    ASSERT_TRUE(r.ok()) << r.status();
    ids = *r;
    ASSERT_TRUE((*bank)->Close().ok());
  }
  // Reopen taking the layout from the bank; a different layer list is a clear error.
  MemoryBankOptions reopen;
  reopen.path = dir.path();
  auto bank = MemoryBank::Open(reopen);
  ASSERT_TRUE(bank.ok()) << bank.status();
  EXPECT_EQ((*bank)->kv_layers(), (std::vector<int32_t>{1, 3, 4}));
  EXPECT_EQ((*bank)->state_dim(), 6);
  auto kv = (*bank)->FetchKV(ids);
  ASSERT_TRUE(kv.ok()) << kv.status();
  ASSERT_EQ(kv->k.shape(), (Shape{rows, nt, 4}));
  for (int64_t i = 0; i < rows * nt * 4; ++i) {
    EXPECT_NEAR(kv->k.data_as<float>()[i], k.data_as<float>()[i], 2e-3f * (1 + std::fabs(k.data_as<float>()[i])));
    EXPECT_NEAR(kv->v.data_as<float>()[i], v.data_as<float>()[i], 2e-3f * (1 + std::fabs(v.data_as<float>()[i])));
  }
  auto st = (*bank)->FetchStates(ids);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->next_tokens, next);
  EXPECT_EQ(st->lengths, (std::vector<int64_t>{nt}));
  ASSERT_EQ(st->states.size(), states.size());
  for (size_t i = 0; i < states.size(); ++i) EXPECT_EQ(st->states[i], Fp16ToFp32(Fp32ToFp16(states[i])));
  auto report = (*bank)->Verify();
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok()) << (report->messages.empty() ? "" : report->messages[0]);
  EXPECT_GT((*bank)->Stats().states_bytes, 0);
  ASSERT_TRUE((*bank)->Close().ok());
  MemoryBankOptions other = reopen;
  other.kv_layers = {1, 3};
  auto mismatch = MemoryBank::Open(other);
  EXPECT_EQ(mismatch.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(mismatch.status().message().find("layers"), std::string_view::npos);
}

TEST(MemoryBankLayoutTest, FormatOneBanksAreRefusedWithAClearMessage) {
  TempDir dir("v1");
  {
    MemoryBankOptions o;
    o.path = dir.path();
    o.dim = kDim;
    o.sync = SyncPolicy::kNoSync;
    ASSERT_TRUE(MemoryBank::Open(o).ok());
  }
  // Rewrite the header as format 1 wrote it: no layer list, no state width.
  {
    internal::ChunkStore::OpenOptions so;
    so.path = dir.path();
    so.create_if_missing = false;
    auto store = internal::ChunkStore::Open(so);
    ASSERT_TRUE(store.ok()) << store.status();
    std::string h;
    auto put32 = [&](uint32_t x) { h.append(reinterpret_cast<const char*>(&x), 4); };
    auto put64 = [&](uint64_t x) { h.append(reinterpret_cast<const char*>(&x), 8); };
    put32(internal::kBankMagic);
    put32(1);
    put64(kDim);
    put64(3);
    put64(64);
    h.push_back(static_cast<char>(DType::kBF16));
    put32(4);
    h += "Flat";
    put32(internal::Crc32c(0, h.data(), h.size()));
    internal::WriteBatchBuilder batch = (*store)->NewBatch();
    batch.Put(internal::Cf::kDefault, "bank", h);
    ASSERT_TRUE((*store)->Write(&batch).ok());
  }
  MemoryBankOptions o;
  o.path = dir.path();
  auto bank = MemoryBank::Open(o);
  EXPECT_EQ(bank.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(bank.status().message().find("older muninn"), std::string_view::npos) << bank.status();
  EXPECT_NE(bank.status().message().find("muninn ingest"), std::string_view::npos) << bank.status();
}

}  // namespace
}  // namespace muninn::memory
