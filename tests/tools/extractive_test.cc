#include "tools/src/extractive.h"

#include <gtest/gtest.h>

#include <cmath>

namespace muninn::tools {
namespace {

// Abram is introduced first, then Sarai, Lot, Egypt; "Take" is no source name.
constexpr const char* kSource =
    "Abram went down with Sarai. Then Abram saw Lot, saying, Take it. They take and take.\n"
    "Sarai and Lot came to Egypt. Abram dwelt in Egypt.";

TEST(ExtractiveTest, NameWeightsCountSourceNamesAndRankTheTopOnes) {
  const NameWeights w = ComputeNameWeights(kSource, 3);
  EXPECT_EQ(w.weight.size(), 4u);
  EXPECT_FALSE(w.weight.count("Take"));
  EXPECT_DOUBLE_EQ(w.weight.at("Abram"), std::log1p(3.0));
  EXPECT_EQ(w.first_offset.at("Sarai"), 21);
  EXPECT_EQ(w.top, (std::vector<std::string>{"Abram", "Sarai", "Lot"}));
  EXPECT_EQ(MentionedNames("Lot, saying, Take Lot and Abram.", w),
            (std::vector<std::string>{"Lot", "Abram"}));
}

TEST(ExtractiveTest, NameOrderAndAddedDiscordanceOfLines) {
  const NameWeights w = ComputeNameWeights(kSource);
  const std::vector<std::string> a = {"Abram", "Sarai"};
  const std::vector<std::string> b = {"Lot", "Egypt"};
  const std::vector<std::string> late_abram = {"Egypt", "Abram"};
  EXPECT_DOUBLE_EQ(NameOrder({&a, &b}, w), 1.0);
  EXPECT_DOUBLE_EQ(NameOrder({&b, &a}, w), 2.0 / 6.0);  // only (Lot, Egypt), (Abram, Sarai)
  // After "Sarai" and "Lot": a line naming Egypt then Abram adds (Sarai, Egypt) and (Lot, Egypt)
  // in order, (Sarai, Abram), (Lot, Abram) and (Egypt, Abram) out of order.
  const std::vector<int64_t> seen = {w.first_offset.at("Sarai"), w.first_offset.at("Lot")};
  const std::unordered_set<std::string> seen_names = {"Sarai", "Lot"};
  EXPECT_DOUBLE_EQ(AddedDiscordance(seen, seen_names, late_abram, w), 3.0 / 5.0);
  // A line about names already met adds no pair.
  EXPECT_DOUBLE_EQ(AddedDiscordance(seen, seen_names, {"Lot"}, w), 0.0);
  EXPECT_DOUBLE_EQ(AddedDiscordance(seen, seen_names, {"Egypt"}, w), 0.0);
  EXPECT_DOUBLE_EQ(AddedDiscordance({}, {}, late_abram, w), 1.0);
}

}  // namespace
}  // namespace muninn::tools
