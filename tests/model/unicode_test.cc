#include "model/src/unicode.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/src/pretokenizer.h"

namespace muninn::model {
namespace {

using internal::PreTokenize;
using internal::PreTokenizerFlavor;

TEST(UnicodeTest, DecodesValidAndRejectsInvalidSequences) {
  EXPECT_EQ(unicode::DecodeOne("a", 0).cp, 'a');
  EXPECT_EQ(unicode::DecodeOne("\xC3\xA9", 0).cp, 0xE9u);
  EXPECT_EQ(unicode::DecodeOne("\xF0\x9F\x98\x80", 0).cp, 0x1F600u);
  // Overlong, surrogate, truncated, stray continuation, past U+10FFFF.
  for (std::string bad : {"\xC0\xAF", "\xED\xA0\x80", "\xE2\x82", "\x80", "\xF4\x90\x80\x80"}) {
    const auto u = unicode::DecodeOne(bad, 0);
    EXPECT_EQ(u.cp, unicode::kInvalidCodePoint) << bad.size();
    EXPECT_EQ(u.length, 1u);
  }
  EXPECT_FALSE(unicode::IsValidUtf8("ab\xFF"));
  EXPECT_EQ(unicode::SanitizeUtf8("a\xFF"
                                  "b"),
            "a\xEF\xBF\xBD"
            "b");
}

TEST(UnicodeTest, CompletePrefixHoldsBackOnlyUnfinishedCharacters) {
  EXPECT_EQ(unicode::CompletePrefixLength("ab\xC3"), 2u);
  EXPECT_EQ(unicode::CompletePrefixLength("ab\xF0\x9F\x98"), 2u);
  EXPECT_EQ(unicode::CompletePrefixLength("ab\xF0\x9F\x98\x80"), 6u);
  // A lead byte followed by a non-continuation can never complete: nothing to hold back.
  EXPECT_EQ(unicode::CompletePrefixLength("\xE2"
                                          "a"),
            2u);
  EXPECT_EQ(unicode::CompletePrefixLength("\xFF"), 1u);
}

TEST(UnicodeTest, CategoriesCaseAndDecomposition) {
  EXPECT_TRUE(unicode::IsLetter('a'));
  EXPECT_TRUE(unicode::IsLetter(0x4E2D));  // 中
  EXPECT_TRUE(unicode::IsNumber(0x0663));  // Arabic-Indic three
  EXPECT_TRUE(unicode::IsNumber(0x00BD));  // ½ (No)
  EXPECT_FALSE(unicode::IsLetter(0x1F600));
  EXPECT_EQ(unicode::Category(0x1F600), unicode::CategoryClass::kSymbol);
  EXPECT_EQ(unicode::Category('!'), unicode::CategoryClass::kPunctuation);
  EXPECT_TRUE(unicode::IsWhitespace(0x3000));
  EXPECT_FALSE(unicode::IsWhitespace(0x200B));  // zero width space is not White_Space
  std::vector<uint32_t> out;
  unicode::AppendNfd(0xE9, &out);  // é
  EXPECT_EQ(out, (std::vector<uint32_t>{'e', 0x301}));
  EXPECT_TRUE(unicode::IsMarkNonspacing(0x301));
  out.clear();
  unicode::AppendNfd(0xD55C, &out);  // 한
  EXPECT_EQ(out, (std::vector<uint32_t>{0x1112, 0x1161, 0x11AB}));
  out.clear();
  unicode::AppendLower(0xC4, &out);   // Ä
  unicode::AppendLower(0x130, &out);  // İ -> i + combining dot
  EXPECT_EQ(out, (std::vector<uint32_t>{0xE4, 'i', 0x307}));
}

std::vector<std::string> Words(PreTokenizerFlavor f, std::string_view text) {
  std::vector<std::string_view> w;
  PreTokenize(f, text, &w);
  std::string joined;
  for (auto v : w) joined += v;
  EXPECT_EQ(joined, text) << "words must tile the input";
  return {w.begin(), w.end()};
}

using V = std::vector<std::string>;

TEST(PreTokenizerTest, Gpt2Pattern) {
  EXPECT_EQ(Words(PreTokenizerFlavor::kGpt2, "Hello world's  test 123!!"),
            (V{"Hello", " world", "'s", " ", " test", " 123", "!!"}));
  EXPECT_EQ(Words(PreTokenizerFlavor::kGpt2, "a\n\n b  "), (V{"a", "\n\n", " b", "  "}));
  EXPECT_EQ(Words(PreTokenizerFlavor::kGpt2, "I'M don't"), (V{"I", "'", "M", " don", "'t"}));
  EXPECT_EQ(Words(PreTokenizerFlavor::kGpt2, "x\xFF\xFEy"), (V{"x", "\xFF\xFE", "y"}));
}

TEST(PreTokenizerTest, Llama3Pattern) {
  EXPECT_EQ(Words(PreTokenizerFlavor::kLlama3, "Hello  world\n\n  x 12345"),
            (V{"Hello", " ", " world", "\n\n", " ", " x", " ", "123", "45"}));
  EXPECT_EQ(Words(PreTokenizerFlavor::kLlama3, "I'M (ok)\n.\n"),
            (V{"I", "'M", " (", "ok", ")\n", ".\n"}));
  EXPECT_EQ(Words(PreTokenizerFlavor::kQwen2, "x 123"), (V{"x", " ", "1", "2", "3"}));
}

TEST(PreTokenizerTest, SmollmIsolatesEveryDigit) {
  EXPECT_EQ(Words(PreTokenizerFlavor::kSmollm, "abc 123 d4"),
            (V{"abc", " ", "1", "2", "3", " d", "4"}));
}

TEST(PreTokenizerTest, RecognisesNamesAndRegexes) {
  EXPECT_EQ(*internal::PreTokenizerFromGgufName("smollm"), PreTokenizerFlavor::kSmollm);
  EXPECT_EQ(*internal::PreTokenizerFromGgufName("llama-bpe"), PreTokenizerFlavor::kLlama3);
  EXPECT_EQ(internal::PreTokenizerFromGgufName("deepseek-coder").status().code(),
            StatusCode::kUnimplemented);
  EXPECT_EQ(internal::PreTokenizerFromRegex("\\d+").status().code(), StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace muninn::model
