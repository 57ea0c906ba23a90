// Sampler: each stage of the chain on hand-made logits, determinism per seed, and the empirical
// distribution against the analytic one.
#include "muninn/model/sampler.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

namespace muninn::model {
namespace {

Sampler Make(const SamplerOptions& o) {
  auto s = Sampler::Create(o);
  MUNINN_CHECK(s.ok()) << s.status();
  return std::move(s).value();
}

SamplerOptions Plain(float temperature, uint64_t seed = 1) {
  SamplerOptions o = SamplerOptions::Greedy();
  o.temperature = temperature;
  o.seed = seed;
  return o;
}

TEST(LlamaSamplerTest, GreedyPicksTheArgmaxAndTheLowestIdOnTies) {
  Sampler s = Make(SamplerOptions::Greedy());
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(s.Sample(logits, {}), 1);
  const std::vector<float> with_nan = {NAN, -3.0f, -2.0f};
  EXPECT_EQ(s.Sample(with_nan, {}), 2);
}

TEST(LlamaSamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  SamplerOptions o = SamplerOptions::Greedy();
  o.repeat_penalty = 2.0f;
  o.repeat_last_n = 2;
  Sampler s = Make(o);
  // Token 0 (3.0 -> 1.5) loses to token 1 (2.0) when it was seen recently.
  const std::vector<float> logits = {3.0f, 2.0f, -0.5f};
  const std::vector<TokenId> recent = {0};
  EXPECT_EQ(s.Sample(logits, recent), 1);
  // Outside the window (last 2 ids) it is not penalised.
  const std::vector<TokenId> old = {0, 2, 2};
  EXPECT_EQ(s.Sample(logits, old), 0);
  // Negative logits get more negative: -0.5 -> -1.0 would still lose, check via a 2-token row.
  const std::vector<float> neg = {-0.6f, -0.5f};
  const std::vector<TokenId> seen1 = {1};
  EXPECT_EQ(s.Sample(neg, seen1), 0);
  // Ids outside the vocabulary are ignored.
  const std::vector<TokenId> junk = {-5, 99};
  EXPECT_EQ(s.Sample(logits, junk), 0);
}

TEST(LlamaSamplerTest, TopKTopPAndMinPRestrictTheCandidates) {
  // probabilities at T = 1: softmax of log(p) = p.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                                     std::log(0.05f)};
  auto seen = [&](SamplerOptions o) {
    Sampler s = Make(o);
    std::vector<int> counts(4, 0);
    for (int i = 0; i < 4000; ++i) ++counts[static_cast<size_t>(s.Sample(logits, {}))];
    return counts;
  };
  SamplerOptions k2 = Plain(1.0f);
  k2.top_k = 2;
  auto c = seen(k2);
  EXPECT_EQ(c[2] + c[3], 0);
  EXPECT_GT(c[1], 0);
  SamplerOptions p = Plain(1.0f);
  p.top_p = 0.75f;  // 0.5 falls short, 0.5 + 0.3 reaches it: two tokens
  c = seen(p);
  EXPECT_EQ(c[2] + c[3], 0);
  EXPECT_GT(c[0], 0);
  EXPECT_GT(c[1], 0);
  SamplerOptions mp = Plain(1.0f);
  mp.min_p = 0.25f;  // threshold 0.125: drops only the 0.05 token
  c = seen(mp);
  EXPECT_EQ(c[3], 0);
  EXPECT_GT(c[2], 0);
}

TEST(LlamaSamplerTest, DrawsFollowTheTemperedDistribution) {
  const std::vector<float> logits = {1.0f, 0.0f, -1.0f};
  const float temp = 0.7f;
  Sampler s = Make(Plain(temp, 1234));
  const int n = 20000;
  std::vector<int> counts(3, 0);
  for (int i = 0; i < n; ++i) ++counts[static_cast<size_t>(s.Sample(logits, {}))];
  double z = 0.0;
  for (float l : logits) z += std::exp(l / temp);
  for (size_t i = 0; i < 3; ++i) {
    const double p = std::exp(logits[i] / temp) / z;
    const double sigma = std::sqrt(p * (1 - p) / n);
    EXPECT_NEAR(counts[i] / double{n}, p, 5 * sigma) << "token " << i;
  }
}

TEST(LlamaSamplerTest, SameSeedSameStreamAndReseedRestarts) {
  Sampler a = Make(Plain(1.0f, 42));
  Sampler b = Make(Plain(1.0f, 42));
  Sampler c = Make(Plain(1.0f, 43));
  std::vector<double> ua, ub, uc;
  for (int i = 0; i < 8; ++i) {
    ua.push_back(a.NextUniform());
    ub.push_back(b.NextUniform());
    uc.push_back(c.NextUniform());
  }
  EXPECT_EQ(ua, ub);
  EXPECT_NE(ua, uc);
  for (double u : ua) {
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
  }
  a.Reseed(42);
  EXPECT_EQ(a.NextUniform(), ua[0]);
}

TEST(LlamaSamplerTest, OptionsAreValidated) {
  SamplerOptions o;
  o.top_p = 0.0f;
  EXPECT_FALSE(Sampler::Create(o).ok());
  o = SamplerOptions();
  o.top_k = -1;
  EXPECT_FALSE(Sampler::Create(o).ok());
  o = SamplerOptions();
  o.min_p = 1.5f;
  EXPECT_FALSE(Sampler::Create(o).ok());
  o = SamplerOptions();
  o.repeat_penalty = 0.0f;
  EXPECT_FALSE(Sampler::Create(o).ok());
  o = SamplerOptions();
  o.temperature = NAN;
  EXPECT_FALSE(Sampler::Create(o).ok());
  EXPECT_TRUE(Sampler::Create(SamplerOptions()).ok());
}

}  // namespace
}  // namespace muninn::model
