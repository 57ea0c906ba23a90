// AdamW, the learning-rate schedules and gradient clipping (optimizer.h) against the formulas of
// torch.optim.AdamW, transformers' schedules and clip_grad_norm_, computed here in float64.
#include "muninn/core/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>
#include <vector>

namespace muninn {
namespace {

TEST(AdamWTest, MatchesPyTorchAlgorithmOverSeveralSteps) {
  AdamWOptions o;
  o.beta1 = 0.8f;
  o.beta2 = 0.95f;
  o.eps = 1e-6f;
  o.weight_decay = 0.1f;
  ASSERT_TRUE(o.Validate().ok());
  std::mt19937 rng(21);
  std::normal_distribution<float> nd;
  const int n = 17;
  std::vector<float> p(n), m(n, 0.0f), v(n, 0.0f);
  for (float& x : p) x = nd(rng);
  std::vector<double> pr(p.begin(), p.end()), mr(n, 0.0), vr(n, 0.0);
  for (int t = 1; t <= 5; ++t) {
    std::vector<float> g(n);
    for (float& x : g) x = nd(rng);
    const float lr = 1e-2f * static_cast<float>(t);
    AdamWStep(o, t, lr, p.data(), g.data(), m.data(), v.data(), n);
    const double bc1 = 1.0 - std::pow(0.8, t), bc2 = 1.0 - std::pow(0.95, t);
    for (int i = 0; i < n; ++i) {
      pr[i] *= 1.0 - static_cast<double>(lr) * 0.1;
      mr[i] = 0.8 * mr[i] + 0.2 * g[i];
      vr[i] = 0.95 * vr[i] + 0.05 * static_cast<double>(g[i]) * g[i];
      pr[i] -= lr / bc1 * mr[i] / (std::sqrt(vr[i]) / std::sqrt(bc2) + 1e-6);
    }
  }
  for (int i = 0; i < n; ++i) {
    EXPECT_NEAR(p[i], pr[i], 2e-6) << i;
    EXPECT_NEAR(m[i], mr[i], 1e-6) << i;
    EXPECT_NEAR(v[i], vr[i], 1e-6) << i;
  }
  AdamWOptions bad;
  bad.beta2 = 1.0f;
  EXPECT_FALSE(bad.Validate().ok());
  bad = AdamWOptions{};
  bad.eps = 0.0f;
  EXPECT_FALSE(bad.Validate().ok());
}

TEST(LrScheduleTest, WarmupThenLinearOrCosine) {
  LrSchedule s;
  s.peak_lr = 1e-3f;
  s.warmup_steps = 10;
  s.total_steps = 110;
  ASSERT_TRUE(s.Validate().ok());
  EXPECT_EQ(s.LrAt(0), 0.0f);
  EXPECT_FLOAT_EQ(s.LrAt(5), 5e-4f);
  EXPECT_FLOAT_EQ(s.LrAt(10), 1e-3f);
  EXPECT_FLOAT_EQ(s.LrAt(60), 5e-4f);
  EXPECT_EQ(s.LrAt(110), 0.0f);
  EXPECT_EQ(s.LrAt(500), 0.0f);
  s.decay = LrDecay::kCosine;
  EXPECT_FLOAT_EQ(s.LrAt(10), 1e-3f);
  EXPECT_FLOAT_EQ(s.LrAt(35),
                  static_cast<float>(1e-3 * 0.5 * (1.0 + std::cos(std::numbers::pi / 4))));
  EXPECT_FLOAT_EQ(s.LrAt(60), 5e-4f);
  EXPECT_NEAR(s.LrAt(110), 0.0f, 1e-12f);
  s.min_lr_ratio = 0.1f;
  EXPECT_FLOAT_EQ(s.LrAt(110), 1e-4f);
  EXPECT_FLOAT_EQ(s.LrAt(60), 1e-3f * (0.1f + 0.9f * 0.5f));
  s.decay = LrDecay::kConstant;
  EXPECT_FLOAT_EQ(s.LrAt(100), 1e-3f);
  EXPECT_FLOAT_EQ(s.LrAt(3), 3e-4f);
  LrSchedule bad = s;
  bad.warmup_steps = 200;
  EXPECT_FALSE(bad.Validate().ok());
  bad = s;
  bad.peak_lr = 0.0f;
  EXPECT_FALSE(bad.Validate().ok());
}

TEST(ClipTest, GlobalNormAndFactor) {
  const std::vector<float> a = {3.0f, 0.0f}, b = {4.0f};
  const std::vector<std::span<const float>> grads = {a, b};
  const double norm = GlobalGradNorm(grads);
  EXPECT_DOUBLE_EQ(norm, 5.0);
  EXPECT_EQ(ClipFactor(norm, 10.0f), 1.0f);
  EXPECT_FLOAT_EQ(ClipFactor(norm, 1.0f), static_cast<float>(1.0 / (5.0 + 1e-6)));
  EXPECT_EQ(ClipFactor(norm, 0.0f), 1.0f);
  EXPECT_TRUE(std::isnan(ClipFactor(INFINITY, 1.0f)));
  EXPECT_TRUE(std::isnan(ClipFactor(NAN, 0.0f)));
}

}  // namespace
}  // namespace muninn
