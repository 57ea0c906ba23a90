// Retriever::Search by method: dense (the embedder), lexical (BM25 words) and hybrid (the two
// rankings in turn).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "muninn/retriever/retriever.h"
#include "tests/retriever/tiny_stack.h"

namespace muninn::retriever {
namespace {

using muninn::testing::KeywordEmbedder;

std::vector<memory::ChunkId> Ids(const std::vector<memory::SearchHit>& hits) {
  std::vector<memory::ChunkId> ids;
  for (const auto& h : hits) ids.push_back(h.id);
  return ids;
}

TEST(RetrieverSearchTest, HybridTakesTheBestOfEachRankingInTurn) {
  memory::MemoryBankOptions o;
  o.in_memory = true;
  o.dim = 4;
  auto bank = memory::MemoryBank::Open(o);
  ASSERT_TRUE(bank.ok()) << bank.status();
  KeywordEmbedder embedder;  // counts the letters a–d: meaning-blind, like a weak embedder
  // Dense ranks 1 > 2 > 4 for a query made of a's; only chunk 3 has the query's rare word.
  const std::vector<std::string> texts = {"aaaa", "aaaab", "ccc xylophone ddd", "aab"};
  std::vector<memory::ChunkInput> chunks(texts.size());
  std::vector<std::vector<float>> embs;
  const std::vector<int32_t> tokens = {1, 2};
  for (size_t i = 0; i < texts.size(); ++i) {
    const EmbedRequest r{texts[i], {}};
    embs.push_back(*embedder.Embed(std::span<const EmbedRequest>(&r, 1)));
  }
  for (size_t i = 0; i < texts.size(); ++i) {
    chunks[i].doc_id = i == 2 ? 2 : 1;
    chunks[i].position = static_cast<int64_t>(i) * 2;
    chunks[i].tokens = tokens;
    chunks[i].text = texts[i];
    chunks[i].embedding = embs[i];
  }
  ASSERT_TRUE((*bank)->Append(chunks).ok());
  auto retriever = Retriever::Create(bank->get(), &embedder, {});
  ASSERT_TRUE(retriever.ok()) << retriever.status();
  const EmbedRequest q{"aaa xylophone?", {}};

  auto dense = retriever->Search(q, {}, 2, RetrievalMethod::kDense);
  ASSERT_TRUE(dense.ok()) << dense.status();
  EXPECT_EQ(Ids(*dense), (std::vector<memory::ChunkId>{1, 2}));
  auto lexical = retriever->Search(q, {}, 2, RetrievalMethod::kLexical);
  ASSERT_TRUE(lexical.ok()) << lexical.status();
  EXPECT_EQ(Ids(*lexical), (std::vector<memory::ChunkId>{3}));  // no other chunk shares a word
  auto hybrid = retriever->Search(q, {}, 2, RetrievalMethod::kHybrid);
  ASSERT_TRUE(hybrid.ok()) << hybrid.status();
  EXPECT_EQ(Ids(*hybrid), (std::vector<memory::ChunkId>{1, 3}));
  hybrid = retriever->Search(q, {}, 4, RetrievalMethod::kHybrid);
  ASSERT_TRUE(hybrid.ok());
  EXPECT_EQ(Ids(*hybrid), (std::vector<memory::ChunkId>{1, 3, 2, 4}));  // then dense fills up
  // Filters apply to both rankings.
  memory::SearchFilter only1;
  only1.doc_ids = {1};
  hybrid = retriever->Search(q, only1, 2, RetrievalMethod::kHybrid);
  ASSERT_TRUE(hybrid.ok());
  EXPECT_EQ(Ids(*hybrid), (std::vector<memory::ChunkId>{1, 2}));
  EXPECT_TRUE(retriever->Search(q, {}, 0, RetrievalMethod::kHybrid)->empty());
}

TEST(RetrieverSearchTest, MethodNamesRoundTripAndUnknownOnesAreRefused) {
  for (RetrievalMethod m :
       {RetrievalMethod::kDense, RetrievalMethod::kLexical, RetrievalMethod::kHybrid}) {
    auto parsed = ParseRetrievalMethod(RetrievalMethodName(m));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, m);
  }
  auto bad = ParseRetrievalMethod("bm25");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("hybrid"), std::string::npos);
}

}  // namespace
}  // namespace muninn::retriever
