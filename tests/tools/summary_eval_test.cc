#include "muninn/tools/summary_eval.h"

#include <gtest/gtest.h>

namespace muninn::tools {
namespace {

// A source with known name counts: Abram 4, Sarai 3, Lot 2, Egypt 2, Hagar 1, Pharaoh 1. "Then"
// (stop list) and "Wherefore" (only at sentence starts) are not names.
constexpr const char* kSource =
    "Abram went down with Sarai and Lot. Then Abram came to Egypt and met Pharaoh.\n"
    "Wherefore Sarai was taken. Abram and Lot parted in Egypt.\n"
    "Sarai gave Hagar to Abram. Wherefore the well was named.";

TEST(SummaryEvalTest, NamePrecisionCountsInventedNamesAndNumbers) {
  SummaryEvalOptions o;
  o.top_names = 4;
  const SummaryEval e = EvaluateSummary(kSource, "Abram met Brigdeleph in Egypt in 1999.", o);
  EXPECT_EQ(e.names_total, 4);  // Abram, Brigdeleph, Egypt, 1999
  EXPECT_EQ(e.names_supported, 2);
  EXPECT_DOUBLE_EQ(e.name_precision, 0.5);
  EXPECT_EQ(e.unsupported_names, (std::vector<std::string>{"Brigdeleph", "1999"}));
  // A summary without names is not penalised.
  EXPECT_DOUBLE_EQ(EvaluateSummary(kSource, "they went down.").name_precision, 1.0);
}

TEST(SummaryEvalTest, TopNamesAreByFrequencyAndCoverageIsTheirShare) {
  SummaryEvalOptions o;
  o.top_names = 4;
  const SummaryEval e = EvaluateSummary(kSource, "Sarai and Lot stayed.", o);
  // Ties (Lot 2, Egypt 2) break by first occurrence; "Wherefore" never appears mid-sentence.
  EXPECT_EQ(e.top_names, (std::vector<std::string>{"Abram", "Sarai", "Lot", "Egypt"}));
  EXPECT_EQ(e.top_names_mentioned, (std::vector<std::string>{"Sarai", "Lot"}));
  EXPECT_DOUBLE_EQ(e.top_name_coverage, 0.5);
}

TEST(SummaryEvalTest, SentencesAreLocatedInThirdsAndOrdered) {
  SummaryEvalOptions o;
  // Each line of kSource is about a third of it; one summary sentence from each, in order.
  const SummaryEval in_order = EvaluateSummary(
      kSource,
      "Abram went down with Sarai. Abram and Lot parted in Egypt. Sarai gave Hagar to Abram.", o);
  EXPECT_EQ(in_order.sentences_total, 3);
  EXPECT_EQ(in_order.sentences_located, 3);
  EXPECT_EQ(in_order.located_per_third, (std::array<int64_t, 3>{1, 1, 1}));
  EXPECT_TRUE(in_order.all_thirds);
  EXPECT_DOUBLE_EQ(in_order.sentence_order, 1.0);
  EXPECT_EQ(in_order.sentence_pairs, 3);
  // Reversed: no pair concordant; and a sentence made up of other words is not located.
  const SummaryEval reversed = EvaluateSummary(
      kSource,
      "Sarai gave Hagar to Abram. Abram and Lot parted in Egypt. Abram went down with Sarai. "
      "Ships sailed over distant oceans.",
      o);
  EXPECT_EQ(reversed.sentences_total, 4);
  EXPECT_EQ(reversed.sentences_located, 3);
  EXPECT_DOUBLE_EQ(reversed.sentence_order, 0.0);
  // Only the first two thirds represented.
  const SummaryEval early = EvaluateSummary(kSource, "Abram came to Egypt and met Pharaoh.", o);
  EXPECT_EQ(early.located_per_third, (std::array<int64_t, 3>{1, 0, 0}));
  EXPECT_FALSE(early.all_thirds);
}

TEST(SummaryEvalTest, NameOrderIsConcordanceWithFirstOccurrence) {
  // Source introduces Abram < Sarai < Lot < Egypt < Pharaoh < Hagar.
  const SummaryEval fwd = EvaluateSummary(kSource, "Abram, Sarai, Lot and Hagar.");
  EXPECT_EQ(fwd.name_pairs, 6);
  EXPECT_DOUBLE_EQ(fwd.name_order, 1.0);
  // Hagar first: three of six pairs discordant.
  const SummaryEval hagar_first = EvaluateSummary(kSource, "Hagar, Abram, Sarai and Lot.");
  EXPECT_DOUBLE_EQ(hagar_first.name_order, 0.5);
}

TEST(SummaryEvalTest, MissedTargetsNameEachMiss) {
  SummaryEval e;
  e.name_precision = 0.99;
  e.top_name_coverage = 0.6;
  e.all_thirds = true;
  e.sentence_order = 1.0;
  e.name_order = 0.8;
  EXPECT_TRUE(MissedTargets(e).empty());
  e.name_precision = 0.9;
  e.all_thirds = false;
  EXPECT_EQ(MissedTargets(e), (std::vector<std::string>{"name_precision", "thirds"}));
  EXPECT_EQ(ToJson(e)["name_precision"], 0.9);
}

TEST(SummaryEvalTest, ConcordantShareSkipsTiesAndCountsPairs) {
  int64_t pairs = 0;
  EXPECT_DOUBLE_EQ(ConcordantShare({1, 2, 3}, &pairs), 1.0);
  EXPECT_EQ(pairs, 3);
  EXPECT_DOUBLE_EQ(ConcordantShare({3, 2, 1}, &pairs), 0.0);
  EXPECT_DOUBLE_EQ(ConcordantShare({1, 3, 2, 2}, &pairs), 3.0 / 5.0);  // (2, 2) is a tie
  EXPECT_EQ(pairs, 5);
  EXPECT_DOUBLE_EQ(ConcordantShare({7}, &pairs), 1.0);
  EXPECT_EQ(pairs, 0);
}

// Capitalised words that are not names of the source ("Take", opening quoted speech; "Anxiety",
// only opening sentences) neither enter the top names nor count in the name order; a name after
// a title ("Mr. Collins") does.
TEST(SummaryEvalTest, OnlySourceNamesCountInTopNamesAndOrder) {
  const std::string source =
      "Mr. Collins came to Longbourn. Mr. Collins met Jane there, saying, Take heart. "
      "They take and take. Anxiety grew. Then Jane and Mr. Collins left Longbourn for Hunsford.";
  SummaryEvalOptions o;
  o.top_names = 10;
  const SummaryEval e = EvaluateSummary(source, "Take heart. Anxiety grew. Jane met Collins.", o);
  EXPECT_EQ(e.top_names, (std::vector<std::string>{"Collins", "Longbourn", "Jane", "Hunsford"}));
  EXPECT_EQ(e.top_names_mentioned, (std::vector<std::string>{"Collins", "Jane"}));
  // Only Jane and Collins are ordered: Jane (introduced second) first is the one discordant pair.
  EXPECT_EQ(e.name_pairs, 1);
  EXPECT_DOUBLE_EQ(e.name_order, 0.0);
  // "Take" and "Anxiety" are words of the source: they do not count against precision.
  EXPECT_DOUBLE_EQ(e.name_precision, 1.0);
}

}  // namespace
}  // namespace muninn::tools
