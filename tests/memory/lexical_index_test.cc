// The bank's word index (BM25): term rules, scores against a hand computation, and that the bank
// keeps it in step with appends, deletes, evictions and reopening.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "memory/src/lexical_index.h"
#include "muninn/memory/memory_bank.h"
#include "tests/memory/memory_test_util.h"

namespace muninn::memory {
namespace {

using internal::LexicalIndex;
using internal::LexicalTerms;
using testing::TempDir;

TEST(LexicalIndexTest, TermsAreLowercasedWordsWithoutFunctionWordsOrSingleLetters) {
  EXPECT_EQ(LexicalTerms("The pass key is 71432. Remember it!"),
            (std::vector<std::string>{"pass", "key", "71432", "remember"}));
  EXPECT_EQ(LexicalTerms("Joseph's coat, a-b-c; CAFÉ déjà"),
            (std::vector<std::string>{"joseph", "coat", "caf\xc3\x89", "d\xc3\xa9j\xc3\xa0"}));
  EXPECT_TRUE(LexicalTerms("").empty());
  EXPECT_TRUE(LexicalTerms("... ! ? a I").empty());
}

TEST(LexicalIndexTest, ScoresAreBm25AndRareTermsWin) {
  LexicalIndex idx;
  idx.Add(1, "apple banana");
  idx.Add(2, "apple apple cherry");
  idx.Add(3, "banana cherry cherry cherry");
  // Hand computation for the query "apple": N = 3, df = 2, avgdl = 3 terms.
  const double idf = std::log(1.0 + (3 - 2 + 0.5) / (2 + 0.5));
  auto bm25 = [&](double tf, double dl) {
    const double k1 = LexicalIndex::kK1, b = LexicalIndex::kB;
    return idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / 3.0));
  };
  auto hits = idx.Search("Apple?", 10, {});
  ASSERT_EQ(hits.size(), 2u);
  EXPECT_EQ(hits[0].id, 2u);
  EXPECT_NEAR(hits[0].score, bm25(2, 3), 1e-5);
  EXPECT_EQ(hits[1].id, 1u);
  EXPECT_NEAR(hits[1].score, bm25(1, 2), 1e-5);
  // No shared word: nothing, not a zero-score list.
  EXPECT_TRUE(idx.Search("durian", 10, {}).empty());
  EXPECT_TRUE(idx.Search("the of and", 10, {}).empty());
  // k and the filter.
  EXPECT_EQ(idx.Search("cherry banana", 1, {}).size(), 1u);
  auto only_odd = idx.Search("cherry", 10, [](uint64_t id) { return id % 2 == 1; });
  ASSERT_EQ(only_odd.size(), 1u);
  EXPECT_EQ(only_odd[0].id, 3u);
}

TEST(LexicalIndexTest, RemoveAndCompactMatchAFreshIndex) {
  LexicalIndex a, fresh;
  a.Add(1, "red fox jumps");
  a.Add(2, "lazy red dog");
  a.Add(3, "quick brown fox");
  a.Remove(2);
  a.Remove(2);  // no-op
  a.Add(3, "quick brown fox fox");  // replaces
  fresh.Add(1, "red fox jumps");
  fresh.Add(3, "quick brown fox fox");
  for (bool compacted : {false, true}) {
    if (compacted) a.Compact();
    for (const char* q : {"red", "fox", "dog", "quick red fox"}) {
      auto x = a.Search(q, 10, {}), y = fresh.Search(q, 10, {});
      ASSERT_EQ(x.size(), y.size()) << q;
      for (size_t i = 0; i < x.size(); ++i) {
        EXPECT_EQ(x[i].id, y[i].id) << q;
        EXPECT_FLOAT_EQ(x[i].score, y[i].score) << q;
      }
    }
  }
  EXPECT_EQ(a.dead_postings(), 0);
  EXPECT_EQ(a.postings(), fresh.postings());
  EXPECT_EQ(a.size(), 2);
}

std::vector<float> Unit(int axis) {
  std::vector<float> e(4, 0.0f);
  e[static_cast<size_t>(axis % 4)] = 1.0f;
  return e;
}

Status AppendText(MemoryBank* bank, DocumentId doc, int64_t position, const std::string& text) {
  ChunkInput c;
  c.doc_id = doc;
  c.position = position;
  const std::vector<int32_t> tokens(3, 7);
  const std::vector<float> emb = Unit(static_cast<int>(position));
  c.tokens = tokens;
  c.text = text;
  c.embedding = emb;
  return bank->Append(std::span<const ChunkInput>(&c, 1)).status();
}

TEST(LexicalIndexTest, BankSearchTextFollowsWritesFiltersAndReopening) {
  TempDir dir("lexical");
  MemoryBankOptions o;
  o.path = dir.path();
  o.create_if_missing = true;
  o.dim = 4;
  {
    auto bank = MemoryBank::Open(o);
    ASSERT_TRUE(bank.ok()) << bank.status();
    MemoryBank* b = bank->get();
    ASSERT_TRUE(AppendText(b, 1, 0, "In the beginning God created the heaven").ok());
    ASSERT_TRUE(AppendText(b, 1, 100, "The pass key is 31337. Remember it.").ok());
    // Built by the first search, then kept in step with later appends.
    auto hits = b->SearchText("What is the pass key?", 4);
    ASSERT_TRUE(hits.ok()) << hits.status();
    ASSERT_EQ(hits->size(), 1u);
    EXPECT_EQ((*hits)[0].position, 100);
    EXPECT_EQ((*hits)[0].doc_id, 1u);
    EXPECT_EQ((*hits)[0].n_tokens, 3);
    ASSERT_TRUE(AppendText(b, 2, 0, "a key to the house, a key to the pass").ok());
    hits = b->SearchText("pass key", 4);
    ASSERT_TRUE(hits.ok());
    ASSERT_EQ(hits->size(), 2u);
    SearchFilter only2;
    only2.doc_ids = {2};
    hits = b->SearchText("pass key", 4, only2);
    ASSERT_TRUE(hits.ok());
    ASSERT_EQ(hits->size(), 1u);
    EXPECT_EQ((*hits)[0].doc_id, 2u);
    SearchFilter before;
    before.before_position = 50;
    hits = b->SearchText("pass key", 4, before);
    ASSERT_TRUE(hits.ok());
    ASSERT_EQ(hits->size(), 1u);
    EXPECT_EQ((*hits)[0].doc_id, 2u);
    // Deleting a document removes its words.
    auto n = b->DeleteDocument(2);
    ASSERT_TRUE(n.ok());
    hits = b->SearchText("house", 4);
    ASSERT_TRUE(hits.ok());
    EXPECT_TRUE(hits->empty());
    EXPECT_EQ(b->SearchText("x", -1).status().code(), StatusCode::kInvalidArgument);
    ASSERT_TRUE(b->Close().ok());
    EXPECT_EQ(b->SearchText("key", 4).status().code(), StatusCode::kFailedPrecondition);
  }
  // Reopened: rebuilt from the stored texts.
  auto bank = MemoryBank::Open(o);
  ASSERT_TRUE(bank.ok()) << bank.status();
  auto hits = (*bank)->SearchText("heaven created", 4);
  ASSERT_TRUE(hits.ok()) << hits.status();
  ASSERT_EQ(hits->size(), 1u);
  EXPECT_EQ((*hits)[0].position, 0);
  hits = (*bank)->SearchText("house", 4);
  ASSERT_TRUE(hits.ok());
  EXPECT_TRUE(hits->empty());
}

TEST(LexicalIndexTest, EvictedChunksLeaveTheWordIndex) {
  MemoryBankOptions o;
  o.in_memory = true;
  o.dim = 4;
  o.capacity_tokens = 6;  // two chunks of three tokens
  o.eviction = EvictionPolicy::kFifoHalf;
  auto bank = MemoryBank::Open(o);
  ASSERT_TRUE(bank.ok()) << bank.status();
  MemoryBank* b = bank->get();
  ASSERT_TRUE(AppendText(b, 1, 0, "alpha words").ok());
  ASSERT_TRUE(b->SearchText("alpha", 1).ok());  // build the index now
  ASSERT_TRUE(AppendText(b, 1, 3, "beta words").ok());
  ASSERT_TRUE(AppendText(b, 1, 6, "gamma words").ok());  // evicts the oldest
  auto hits = b->SearchText("alpha beta gamma", 8);
  ASSERT_TRUE(hits.ok());
  std::vector<int64_t> live;
  for (const auto& c : b->ListChunks()) live.push_back(c.position);
  ASSERT_EQ(hits->size(), live.size());
  for (const SearchHit& h : *hits) {
    EXPECT_NE(std::find(live.begin(), live.end(), h.position), live.end());
  }
  EXPECT_EQ(std::count_if(hits->begin(), hits->end(), [](const SearchHit& h) {
              return h.position == 0;
            }),
            0);
}

}  // namespace
}  // namespace muninn::memory
