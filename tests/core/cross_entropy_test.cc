// Fused head + cross-entropy (cross_entropy.h): loss against float64, dHidden against float64
// central finite differences of the mean loss, ignored positions, blocking and bad labels.
#include "muninn/core/cross_entropy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <utility>
#include <vector>

#include "tests/core/grad_check_util.h"

namespace muninn {
namespace {

using testing_grad::GradClose;
using testing_grad::NumericGrad;
using testing_grad::Random;
using testing_grad::ToDouble;

// Mean over supervised rows of logsumexp(h·Wᵀ) - (h·Wᵀ)[label], in float64.
double RefMeanLoss(const std::vector<double>& h, const std::vector<double>& w,
                   const std::vector<int32_t>& labels, int64_t E, int64_t V) {
  double total = 0.0;
  int n = 0;
  for (size_t t = 0; t < labels.size(); ++t) {
    if (labels[t] == kIgnoreLabel) continue;
    std::vector<double> z(static_cast<size_t>(V));
    double mx = -INFINITY;
    for (int64_t j = 0; j < V; ++j) {
      double s = 0.0;
      for (int64_t i = 0; i < E; ++i)
        s += h[t * static_cast<size_t>(E) + static_cast<size_t>(i)] *
             w[static_cast<size_t>(j * E + i)];
      z[static_cast<size_t>(j)] = s;
      mx = std::max(mx, s);
    }
    double sum = 0.0;
    for (const double s : z) sum += std::exp(s - mx);
    total += mx + std::log(sum) - z[static_cast<size_t>(labels[t])];
    ++n;
  }
  return n > 0 ? total / n : 0.0;
}

TEST(CrossEntropyTest, LossAndHiddenGradientMatchFiniteDifferences) {
  std::mt19937 rng(11);
  const int64_t T = 9, E = 11, V = 53;
  const auto h = Random(T * E, rng, -2.0f, 2.0f), w = Random(V * E, rng);
  const std::vector<int32_t> labels = {3, kIgnoreLabel, 0, 52, 17, kIgnoreLabel, 17, 40, 9};
  ThreadPool pool(2);
  const auto hd = ToDouble(h), wd = ToDouble(w);
  const double want = RefMeanLoss(hd, wd, labels, E, V);
  const auto grad =
      NumericGrad([&](const auto& p) { return RefMeanLoss(p, wd, labels, E, V); }, hd);
  std::vector<float> first;
  const std::pair<int64_t, int64_t> blockings[] = {{1, 53}, {3, 7}, {32, 4096}, {4, 1}};
  for (const auto& [block, vocab_block] : blockings) {
    CrossEntropyOptions o;
    o.rows_per_block = block;
    o.vocab_block = vocab_block;
    std::vector<float> dh(h.size(), NAN);
    auto r = FusedCrossEntropy(&pool, h.data(), w.data(), labels.data(), T, E, V, dh.data(), o);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->n_supervised, 7);
    EXPECT_NEAR(r->mean(), want, 1e-5 * want);
    EXPECT_TRUE(GradClose(dh, grad, 1e-4)) << "block " << block;
    for (int64_t i = 0; i < E; ++i) {
      EXPECT_EQ(dh[static_cast<size_t>(1 * E + i)], 0.0f);
      EXPECT_EQ(dh[static_cast<size_t>(5 * E + i)], 0.0f);
    }
    if (first.empty()) first = dh;
    for (size_t i = 0; i < dh.size(); ++i) EXPECT_NEAR(first[i], dh[i], 1e-6f) << "block " << block;
  }
  // Loss alone, and an explicit grad_scale.
  auto loss_only = FusedCrossEntropy(nullptr, h.data(), w.data(), labels.data(), T, E, V, nullptr);
  ASSERT_TRUE(loss_only.ok());
  EXPECT_NEAR(loss_only->mean(), want, 1e-5 * want);
  CrossEntropyOptions o;
  o.grad_scale = 1.0f;  // gradient of the sum
  std::vector<float> dsum(h.size());
  ASSERT_TRUE(
      FusedCrossEntropy(&pool, h.data(), w.data(), labels.data(), T, E, V, dsum.data(), o).ok());
  for (size_t i = 0; i < dsum.size(); ++i) EXPECT_NEAR(dsum[i], first[i] * 7.0f, 1e-5f);
}

TEST(CrossEntropyTest, AllIgnoredAndBadLabels) {
  const int64_t T = 2, E = 3, V = 4;
  const std::vector<float> h(T * E, 0.5f), w(V * E, 0.25f);
  std::vector<float> dh(h.size(), NAN);
  const std::vector<int32_t> none = {kIgnoreLabel, kIgnoreLabel};
  auto r = FusedCrossEntropy(nullptr, h.data(), w.data(), none.data(), T, E, V, dh.data());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->n_supervised, 0);
  EXPECT_EQ(r->mean(), 0.0);
  for (const float g : dh) EXPECT_EQ(g, 0.0f);
  for (const int32_t bad : {4, -1, -99}) {
    const std::vector<int32_t> labels = {0, bad};
    std::vector<float> untouched(h.size(), 7.0f);
    auto b =
        FusedCrossEntropy(nullptr, h.data(), w.data(), labels.data(), T, E, V, untouched.data());
    EXPECT_FALSE(b.ok()) << bad;
    EXPECT_EQ(untouched[0], 7.0f);
  }
}

}  // namespace
}  // namespace muninn
