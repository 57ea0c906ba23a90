#include "muninn/tools/names.h"

#include <gtest/gtest.h>

namespace muninn::tools {
namespace {

std::vector<std::string> NamesOf(std::string_view text) {
  std::vector<std::string> out;
  for (const auto& n : FindNames(text)) out.push_back(n.name);
  return out;
}

TEST(NamesTest, CapitalisedWordsOffTheStopListAndNumbers) {
  EXPECT_EQ(NamesOf("And God said unto Abram, The LORD is 99 years old."),
            (std::vector<std::string>{"God", "Abram", "LORD", "99"}));
  // A single capital letter is not a name; "I" is not either.
  EXPECT_EQ(NamesOf("I saw A man."), (std::vector<std::string>{}));
  // An apostrophe ends the word: the possessive still names Joseph.
  EXPECT_EQ(NamesOf("upon Joseph's knees"), (std::vector<std::string>{"Joseph"}));
}

TEST(NamesTest, SentenceStartsSkipNumbersQuotesAndBlankLines) {
  const auto names = FindNames("day.\n  5 Noah went. \"Shem came\", said Ham\n\nJapheth");
  ASSERT_EQ(names.size(), 5u);
  EXPECT_EQ(names[0].name, "5");
  EXPECT_TRUE(names[0].number);
  EXPECT_EQ(names[1].name, "Noah");
  EXPECT_TRUE(names[1].sentence_start);  // the verse number does not hide the '.'
  EXPECT_EQ(names[2].name, "Shem");
  EXPECT_TRUE(names[2].sentence_start);  // quotes are transparent
  EXPECT_EQ(names[3].name, "Ham");
  EXPECT_FALSE(names[3].sentence_start);
  EXPECT_EQ(names[4].name, "Japheth");
  EXPECT_TRUE(names[4].sentence_start);  // after a blank line
  EXPECT_EQ(names[1].offset, 9);
}

TEST(NamesTest, CurlyQuotesAreNotLetters) {
  // “Elizabeth” in UTF-8 curly quotes is still the name Elizabeth, and starts no word of its own.
  const auto names = NamesOf(
      "said \xE2\x80\x9C"
      "Elizabeth\xE2\x80\x9D to Darcy\xE2\x80\x94then");
  EXPECT_EQ(names, (std::vector<std::string>{"Elizabeth", "Darcy"}));
  const auto words = Words("caf\xC3\xA9 \xE2\x80\x9CX\xE2\x80\x9D");
  ASSERT_EQ(words.size(), 2u);
  EXPECT_EQ(words[0], "caf\xC3\xA9");  // UTF-8 letters stay inside words
  EXPECT_EQ(words[1], "X");
}

TEST(NamesTest, StopListAndLowerCase) {
  EXPECT_TRUE(IsNameStopWord("The"));
  EXPECT_TRUE(IsNameStopWord("Behold"));
  EXPECT_FALSE(IsNameStopWord("Egypt"));
  EXPECT_FALSE(IsNameStopWord("the"));  // the list is of capitalised words
  EXPECT_EQ(LowerAscii("LORD God\xC3\x89"), "lord god\xC3\x89");
}

TEST(NamesTest, TitleAndInitialDotsEndNoSentence) {
  const auto names = FindNames("said Mr. Collins. Darcy came; J. Smith too");
  ASSERT_EQ(names.size(), 3u);
  EXPECT_EQ(names[0].name, "Collins");
  EXPECT_FALSE(names[0].sentence_start);  // "Mr." is a title, not the end of a sentence
  EXPECT_EQ(names[1].name, "Darcy");
  EXPECT_TRUE(names[1].sentence_start);
  EXPECT_EQ(names[2].name, "Smith");
  EXPECT_FALSE(names[2].sentence_start);
}

TEST(NamesTest, SourceNamesAreCapitalisedMidSentenceMoreOftenThanLowerCase) {
  // Collins: only after "Mr."; Take: capitalised after "saying," twice but "take" three times;
  // Wherefore: only opening sentences; Moses: mid-sentence; Red: as often "red" as "Red".
  const std::string text =
      "Mr. Collins came. Then Mr. Collins spoke, saying, Take it. He said, Take this. "
      "Wherefore go. Wherefore stay. They take and take and take. Moses saw the Red sea and a "
      "red cow with Moses.";
  const auto names = SourceNames(text);
  ASSERT_TRUE(names.count("Collins"));
  EXPECT_EQ(names.at("Collins").count, 2);
  EXPECT_EQ(names.at("Collins").mid_sentence, 2);
  EXPECT_EQ(names.at("Collins").first_offset, 4);
  ASSERT_TRUE(names.count("Moses"));
  EXPECT_EQ(names.at("Moses").count, 2);
  EXPECT_FALSE(names.count("Take"));
  EXPECT_FALSE(names.count("Wherefore"));
  EXPECT_FALSE(names.count("Red"));
  EXPECT_FALSE(names.count("Mr"));  // on the stop list
  EXPECT_EQ(names.size(), 2u);
  // Most frequent first; ties go to the name the source introduces first.
  EXPECT_EQ(TopSourceNames(names, 5), (std::vector<std::string>{"Collins", "Moses"}));
  EXPECT_EQ(TopSourceNames(names, 1), (std::vector<std::string>{"Collins"}));
}

}  // namespace
}  // namespace muninn::tools
