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

}  // namespace
}  // namespace muninn::tools
