// Excerpt focus (re-read mode): sentence splitting, joining contiguous chunks, and keeping the
// sentences most like the question (within a margin of the best) ± context.
#include "muninn/retriever/excerpt_focus.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/retriever/tiny_stack.h"

namespace muninn::retriever {
namespace {

using muninn::testing::KeywordEmbedder;
using Strings = std::vector<std::string>;

TEST(ExcerptFocusTest, SplitsSentencesAtEndPunctuationAndLineBreaks) {
  EXPECT_EQ(SplitSentences("One. Two!  Three?\nFour\n\n  five"),
            (Strings{"One.", "Two!", "Three?", "Four", "five"}));
  // Abbreviations and initials do not end a sentence; closing quotes stay with theirs.
  EXPECT_EQ(SplitSentences("Mr. Darcy met Mrs. Bennet and J. Smith. \"Go!\" she said. (Aside.) End"),
            (Strings{"Mr. Darcy met Mrs. Bennet and J. Smith.", "\"Go!\"", "she said.", "(Aside.)", "End"}));
  // A right double quotation mark (U+201D) after the stop, and a stop inside a number or word.
  EXPECT_EQ(SplitSentences("He said \xE2\x80\x9CYes.\xE2\x80\x9D Then 3.14 e.g.x left..."),
            (Strings{"He said \xE2\x80\x9CYes.\xE2\x80\x9D", "Then 3.14 e.g.x left..."}));
  EXPECT_TRUE(SplitSentences(" \n\n ").empty());
  // Text wrapped at a fixed width: a line that starts in lower case continues the sentence (its
  // line break reads as a space); a verse number or capital starts a new one.
  EXPECT_EQ(SplitSentences("  6 And Noah was six hundred years old when the\n   earth was wet\n  7 And Noah went in"),
            (Strings{"6 And Noah was six hundred years old when the earth was wet", "7 And Noah went in"}));
  EXPECT_EQ(SplitSentences("no stop at all"), (Strings{"no stop at all"}));
}

Excerpt Make(memory::DocumentId doc, int64_t position, int64_t n_tokens, float score, std::string text) {
  Excerpt e;
  e.hit.id = static_cast<memory::ChunkId>(position + 1);
  e.hit.doc_id = doc;
  e.hit.position = position;
  e.hit.n_tokens = n_tokens;
  e.hit.score = score;
  e.text = std::move(text);
  return e;
}

TEST(ExcerptFocusTest, KeepsTheSentencesNearTheBestScoreWithTheirNeighbours) {
  KeywordEmbedder embedder;  // counts a–d: the question "bbb" is most like sentences of b's
  auto tok = muninn::testing::ByteTokenizer();
  std::vector<Excerpt> ex;
  // Doc 1: two contiguous chunks; the best sentence straddles their boundary.
  ex.push_back(Make(1, 0, 10, 0.5f, "ccc. ddd. ab"));
  ex.push_back(Make(1, 10, 10, 0.9f, "bbb. aaa. ccc. ddd."));
  // Doc 2: one chunk whose best sentence scores 0.949 against doc 1's 0.970.
  ex.push_back(Make(2, 0, 8, 0.2f, "aaaa. cccc. bbbd. dddd."));
  // Doc 3: nothing like the question.
  ex.push_back(Make(3, 0, 8, 0.7f, "cc. dd."));

  auto focused = FocusExcerpts(embedder, *tok, "bbb?", ex, /*context=*/1, /*margin=*/0.1);
  ASSERT_TRUE(focused.ok()) << focused.status();
  ASSERT_EQ(focused->size(), 2u);  // doc 3 keeps no sentence
  const Excerpt& a = (*focused)[0];
  EXPECT_EQ(a.text, "ddd. abbbb. aaa.");  // "ab" + "bbb." joined into one sentence
  EXPECT_EQ(a.hit.doc_id, 1u);
  EXPECT_EQ(a.hit.position, 0);
  EXPECT_EQ(a.hit.n_tokens, 20);       // the run's span in the document
  EXPECT_FLOAT_EQ(a.hit.score, 0.9f);  // the run's best retrieval score
  EXPECT_EQ(a.tokens, tok->Encode(a.text, false, false));
  EXPECT_EQ((*focused)[1].text, "cccc. bbbd. dddd.");
  EXPECT_EQ(embedder.calls, 1);  // the question and every sentence in one batch

  auto tight = FocusExcerpts(embedder, *tok, "bbb?", ex, /*context=*/0, /*margin=*/0.1);
  ASSERT_TRUE(tight.ok());
  ASSERT_EQ(tight->size(), 2u);
  EXPECT_EQ((*tight)[0].text, "abbbb.");
  EXPECT_EQ((*tight)[1].text, "bbbd.");
  // A margin below the gap between the two runs' best sentences keeps only the best run.
  auto best_only = FocusExcerpts(embedder, *tok, "bbb?", ex, /*context=*/0, /*margin=*/0.01);
  ASSERT_TRUE(best_only.ok());
  ASSERT_EQ(best_only->size(), 1u);
  EXPECT_EQ((*best_only)[0].text, "abbbb.");
  // A margin of 2 keeps every sentence of every run.
  auto all = FocusExcerpts(embedder, *tok, "bbb?", ex, /*context=*/0, /*margin=*/2.0);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[2].text, "cc. dd.");

  // context -1 (and an empty question) join the runs but keep their whole text.
  for (auto r : {FocusExcerpts(embedder, *tok, "bbb?", ex, -1, 0.1), FocusExcerpts(embedder, *tok, "", ex, 2, 0.1)}) {
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->size(), 3u);
    EXPECT_EQ((*r)[0].text, "ccc. ddd. abbbb. aaa. ccc. ddd.");
    EXPECT_EQ((*r)[1].text, "aaaa. cccc. bbbd. dddd.");
  }
}

TEST(ExcerptFocusTest, SeveralMatchingSentencesOfOneRunAreKeptInOrder) {
  KeywordEmbedder embedder;
  auto tok = muninn::testing::ByteTokenizer();
  std::vector<Excerpt> ex{Make(1, 0, 10, 0.5f, "bx. cc. bb. dd.")};
  auto r = FocusExcerpts(embedder, *tok, "b", ex, 0, 0.1);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].text, "bx. bb.");
}

TEST(ExcerptFocusTest, RunsOfDifferentDocumentsOrGapsStayApart) {
  KeywordEmbedder embedder;
  auto tok = muninn::testing::ByteTokenizer();
  std::vector<Excerpt> ex;
  ex.push_back(Make(1, 0, 10, 0.5f, "aaa."));
  ex.push_back(Make(1, 11, 10, 0.5f, "bbb."));  // a gap of one token
  ex.push_back(Make(2, 21, 10, 0.5f, "ccc."));  // another document at the adjoining position
  auto r = FocusExcerpts(embedder, *tok, "abc", ex, 0, 2.0);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].text, "aaa.");
  EXPECT_EQ((*r)[1].text, "bbb.");
  EXPECT_EQ((*r)[2].text, "ccc.");
}

}  // namespace
}  // namespace muninn::retriever
