#include "muninn/tools/document_text.h"

#include <gtest/gtest.h>

namespace muninn::tools {
namespace {

TEST(DocumentTextTest, RejectsEmptyBinaryNonUtf8AndOversizedInput) {
  auto code_and_message = [](std::string_view t, int64_t max = kDefaultMaxDocumentBytes) {
    const Status s = CheckDocumentText(t, max);
    return std::make_pair(s.code(), std::string(s.message()));
  };
  EXPECT_TRUE(CheckDocumentText("In the beginning.").ok());
  auto [c1, m1] = code_and_message(" \n\t ");
  EXPECT_EQ(c1, StatusCode::kInvalidArgument);
  EXPECT_NE(m1.find("empty"), std::string::npos);
  auto [c2, m2] = code_and_message(std::string("text\0more", 9));
  EXPECT_EQ(c2, StatusCode::kInvalidArgument);
  EXPECT_NE(m2.find("NUL byte at offset 4"), std::string::npos);
  std::string latin1;
  for (int i = 0; i < 50; ++i) latin1 += "caf\xE9 ";  // Latin-1, not UTF-8
  auto [c3, m3] = code_and_message(latin1);
  EXPECT_EQ(c3, StatusCode::kInvalidArgument);
  EXPECT_NE(m3.find("iconv"), std::string::npos);
  auto [c4, m4] = code_and_message("0123456789", 9);
  EXPECT_EQ(c4, StatusCode::kInvalidArgument);
  EXPECT_NE(m4.find("--max-bytes 10"), std::string::npos);
  // One stray byte in a long UTF-8 text is tolerated.
  std::string mostly(400, 'a');
  mostly += "\xFF caf\xC3\xA9";
  EXPECT_TRUE(CheckDocumentText(mostly).ok());
  EXPECT_NEAR(InvalidUtf8Fraction(mostly), 1.0 / static_cast<double>(mostly.size()), 1e-12);
  EXPECT_EQ(InvalidUtf8Fraction("\xC0\xAF"), 1.0);      // an overlong '/'
  EXPECT_EQ(InvalidUtf8Fraction("\xED\xA0\x80"), 1.0);  // a surrogate
}

TEST(DocumentTextTest, SentencesKeepTheirSpansAndDropVerseNumbers) {
  const std::string text =
      "\nGenesis 1\n\n  1 In the beginning God created the heaven and the earth.\n  2 And the "
      "earth "
      "was without form,\nand void. Mr. Smith met J. Doe! \"Who?\" said he\n\nand a last line";
  const SegmentedText seg = SegmentText(text);
  ASSERT_EQ(seg.headings.size(), 1u);
  EXPECT_EQ(seg.headings[0].text, "Genesis 1");
  EXPECT_EQ(text.substr(static_cast<size_t>(seg.headings[0].begin), 9), "Genesis 1");
  std::vector<std::string> texts;
  for (const Sentence& s : seg.sentences) texts.push_back(s.text);
  EXPECT_EQ(texts, (std::vector<std::string>{
                       "In the beginning God created the heaven and the earth.",
                       "And the earth was without form, and void.", "Mr. Smith met J. Doe!",
                       "\"Who?\"", "said he", "and a last line"}));
  for (const Sentence& s : seg.sentences) {
    // The span starts at the sentence's first visible character (after the verse number).
    EXPECT_EQ(text[static_cast<size_t>(s.begin)], s.text[0]) << s.text;
    EXPECT_EQ(text[static_cast<size_t>(s.end - 1)], s.text.back()) << s.text;
  }
  EXPECT_EQ(seg.sentences[0].n_words, 10);
}

TEST(DocumentTextTest, AnEllipsisEndsASentence) {
  // The summarizer ends a cut sentence with " …"; the next line must not run into it.
  const SegmentedText seg =
      SegmentText("Darcy had been standing \xE2\x80\xA6 Elizabeth passed out.");
  ASSERT_EQ(seg.sentences.size(), 2u);
  EXPECT_EQ(seg.sentences[0].text, "Darcy had been standing \xE2\x80\xA6");
  EXPECT_EQ(seg.sentences[1].text, "Elizabeth passed out.");
}

TEST(DocumentTextTest, HeadingsNeedAParagraphOfTheirOwn) {
  const SegmentedText seg = SegmentText("CHAPTER I.\n\nIt is a truth.\nShort line\n\nThe end,\n");
  ASSERT_EQ(seg.headings.size(), 1u);
  EXPECT_EQ(seg.headings[0].text, "CHAPTER I.");
  ASSERT_EQ(seg.sentences.size(), 3u);
  EXPECT_EQ(seg.sentences[1].text, "Short line");  // a second line of a paragraph is prose
  EXPECT_EQ(seg.sentences[2].text, "The end,");    // ends with a comma: not a heading
}

TEST(DocumentTextTest, TextWithoutPunctuationIsCutIntoBoundedSentences) {
  std::string words;
  for (int i = 0; i < 2000; ++i) words += "word ";
  const SegmentedText seg = SegmentText(words);
  ASSERT_GE(seg.sentences.size(), 4u);
  for (const Sentence& s : seg.sentences) EXPECT_LE(s.end - s.begin, 2100);
}

}  // namespace
}  // namespace muninn::tools
