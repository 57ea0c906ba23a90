#include "muninn/retriever/knn_lm.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "tests/retriever/tiny_stack.h"

namespace muninn::retriever {
namespace {

std::vector<float> RandomRows(std::mt19937_64& rng, int64_t n, int64_t d) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n * d));
  for (float& x : v) x = g(rng);
  return v;
}

// Naive float64 reference: all squared distances, stable sort by (distance, row).
std::vector<std::pair<double, int64_t>> NaiveKnn(const std::vector<float>& keys, int64_t d,
                                                 const float* q, int64_t k) {
  const int64_t n = static_cast<int64_t>(keys.size()) / d;
  std::vector<std::pair<double, int64_t>> all;
  for (int64_t j = 0; j < n; ++j) {
    double s = 0.0;
    for (int64_t c = 0; c < d; ++c) {
      const double diff = static_cast<double>(q[c]) - keys[static_cast<size_t>(j * d + c)];
      s += diff * diff;
    }
    all.emplace_back(s, j);
  }
  std::sort(all.begin(), all.end());
  all.resize(static_cast<size_t>(std::min(k, n)));
  return all;
}

// Naive float64 mixture: p = (1-λ) softmax(logits) + λ p_kNN, p_kNN from plain exp sums.
std::vector<double> NaiveMix(const std::vector<float>& logits, const std::vector<float>& dist,
                             const std::vector<model::TokenId>& tok, double lambda, double temp) {
  double mx = -1e300;
  for (float v : logits) mx = std::max(mx, static_cast<double>(v));
  double z = 0.0;
  for (float v : logits) z += std::exp(v - mx);
  std::vector<double> p(logits.size());
  for (size_t w = 0; w < logits.size(); ++w) p[w] = (1 - lambda) * std::exp(logits[w] - mx) / z;
  double zk = 0.0;
  for (size_t i = 0; i < dist.size(); ++i) {
    if (tok[i] >= 0) zk += std::exp(-dist[i] / temp);
  }
  for (size_t i = 0; i < dist.size(); ++i) {
    if (tok[i] >= 0) p[static_cast<size_t>(tok[i])] += lambda * std::exp(-dist[i] / temp) / zk;
  }
  return p;
}

TEST(KnnLmTest, SearchMatchesNaiveFloat64Reference) {
  std::mt19937_64 rng(7);
  const int64_t n = 300, d = 24, nq = 37, k = 16;  // nq not a multiple of anything
  std::vector<float> keys = RandomRows(rng, n, d);
  std::vector<model::TokenId> next(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) next[static_cast<size_t>(i)] = static_cast<model::TokenId>(i % 11);
  auto ds = KnnDatastore::Create(keys, next, d);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  const std::vector<float> q = RandomRows(rng, nq, d);
  auto nb = ds->Search(q, nq, k);
  ASSERT_TRUE(nb.ok()) << nb.status().ToString();
  ASSERT_EQ(nb->n_queries, nq);
  ASSERT_EQ(nb->k, k);
  for (int64_t i = 0; i < nq; ++i) {
    const auto ref = NaiveKnn(keys, d, q.data() + i * d, k);
    for (int64_t r = 0; r < k; ++r) {
      const size_t at = static_cast<size_t>(i * k + r);
      EXPECT_EQ(nb->index[at], ref[static_cast<size_t>(r)].second) << "query " << i << " rank " << r;
      EXPECT_NEAR(nb->dist[at], ref[static_cast<size_t>(r)].first,
                  1e-4 * std::max(1.0, ref[static_cast<size_t>(r)].first));
      EXPECT_EQ(nb->token[at], next[static_cast<size_t>(ref[static_cast<size_t>(r)].second)]);
    }
  }
}

TEST(KnnLmTest, RowsWithoutNextTokenAreDroppedAndShortDatastoresPad) {
  const int64_t d = 2;
  // Row 1 sits exactly on the query but has no next token: it must never be a neighbour.
  const std::vector<float> keys = {3, 0, 0, 0, 1, 0};
  const std::vector<model::TokenId> next = {5, -1, 7};
  auto ds = KnnDatastore::Create(keys, next, d);
  ASSERT_TRUE(ds.ok());
  EXPECT_EQ(ds->size(), 2);
  const std::vector<float> q = {0, 0};
  auto nb = ds->Search(q, 1, 4);
  ASSERT_TRUE(nb.ok());
  EXPECT_EQ(nb->token, (std::vector<model::TokenId>{7, 5, -1, -1}));
  EXPECT_FLOAT_EQ(nb->dist[0], 1.0f);
  EXPECT_FLOAT_EQ(nb->dist[1], 9.0f);
  EXPECT_TRUE(std::isinf(nb->dist[2]));
}

TEST(KnnLmTest, CreateAndSearchRejectBadShapes) {
  const std::vector<float> keys = {1, 2, 3};
  const std::vector<model::TokenId> next = {1, 2};
  EXPECT_FALSE(KnnDatastore::Create(keys, next, 2).ok());
  EXPECT_FALSE(KnnDatastore::Create(keys, next, 0).ok());
  auto ds = KnnDatastore::Create(std::vector<float>{1, 2, 3, 4}, next, 2);
  ASSERT_TRUE(ds.ok());
  EXPECT_FALSE(ds->Search(std::vector<float>{1, 2, 3}, 1, 1).ok());
  EXPECT_FALSE(ds->Search(std::vector<float>{1, 2}, 1, 0).ok());
}

TEST(KnnLmTest, MixLogProbMatchesNaiveMixture) {
  std::mt19937_64 rng(3);
  std::normal_distribution<float> g(0.0f, 3.0f);
  const int n_vocab = 40;
  std::vector<float> logits(n_vocab);
  for (float& v : logits) v = g(rng);
  // Large distances: plain exp(-d/T) would underflow in float32 without log-sum-exp.
  const std::vector<float> dist = {80.0f, 81.5f, 83.0f, 90.0f, 95.0f, 120.0f};
  const std::vector<model::TokenId> tok = {4, 9, 4, -1, 12, 9};
  for (double lambda : {0.1, 0.25, 0.9}) {
    for (double temp : {1.0, 5.0}) {
      const auto ref = NaiveMix(logits, dist, tok, lambda, temp);
      double mx = -1e300, z = 0;
      for (float v : logits) mx = std::max(mx, static_cast<double>(v));
      for (float v : logits) z += std::exp(v - mx);
      std::vector<float> mixed = logits;
      MixLogits(mixed, dist, tok, static_cast<float>(lambda), static_cast<float>(temp));
      double total = 0.0;
      for (int w = 0; w < n_vocab; ++w) {
        const float lm = static_cast<float>(logits[static_cast<size_t>(w)] - mx - std::log(z));
        const float got = MixLogProb(lm, dist, tok, w, static_cast<float>(lambda),
                                     static_cast<float>(temp));
        EXPECT_NEAR(got, std::log(ref[static_cast<size_t>(w)]), 1e-4) << "w " << w;
        EXPECT_NEAR(mixed[static_cast<size_t>(w)], std::log(ref[static_cast<size_t>(w)]), 1e-4);
        total += std::exp(static_cast<double>(mixed[static_cast<size_t>(w)]));
      }
      EXPECT_NEAR(total, 1.0, 1e-5);  // the mixed row is a normalised log-distribution
    }
  }
}

TEST(KnnLmTest, LambdaZeroAndNoValidNeighbourReturnTheModelExactly) {
  const std::vector<float> logits = {1.5f, -2.0f, 0.25f, 7.0f};
  const std::vector<float> dist = {0.0f, 1.0f};
  const std::vector<model::TokenId> tok = {2, 3};
  std::vector<float> row = logits;
  MixLogits(row, dist, tok, 0.0f, 1.0f);
  EXPECT_EQ(row, logits);
  EXPECT_EQ(MixLogProb(-1.2345f, dist, tok, 2, 0.0f, 1.0f), -1.2345f);
  const std::vector<model::TokenId> none = {-1, -1};
  MixLogits(row, dist, none, 0.5f, 1.0f);
  EXPECT_EQ(row, logits);
  EXPECT_EQ(MixLogProb(-1.2345f, dist, none, 2, 0.5f, 1.0f), -1.2345f);
}

TEST(KnnLmTest, NeighbourVotesRaiseTheirTokenOnly) {
  const std::vector<float> dist = {0.5f};
  const std::vector<model::TokenId> tok = {1};
  const float lm = std::log(0.01f);
  // p = 0.75 · 0.01 + 0.25 · 1 for the voted token, 0.75 · 0.01 for any other.
  EXPECT_NEAR(MixLogProb(lm, dist, tok, 1, 0.25f, 1.0f), std::log(0.2575), 1e-6);
  EXPECT_NEAR(MixLogProb(lm, dist, tok, 2, 0.25f, 1.0f), std::log(0.0075), 1e-6);
  EXPECT_TRUE(std::isinf(KnnLogProb(dist, tok, 2, 1.0f)));
  EXPECT_NEAR(KnnLogProb(dist, tok, 1, 1.0f), 0.0, 1e-12);
}

TEST(KnnLmTest, Scores1024PositionsAgainst4kStatesQuickly) {
  std::mt19937_64 rng(11);
  const int64_t n = 4096, d = 576, nq = 1024;
  const std::vector<float> keys = RandomRows(rng, n, d);
  std::vector<model::TokenId> next(static_cast<size_t>(n), 3);
  auto ds = KnnDatastore::Create(keys, next, d);
  ASSERT_TRUE(ds.ok());
  const std::vector<float> q = RandomRows(rng, nq, d);
  const auto t0 = std::chrono::steady_clock::now();
  auto nb = ds->Search(q, nq, 64);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(nb.ok());
  // ~4.8 GFLOP of SGEMM plus 4M partial-sort entries: well under a few seconds on one shared core.
  EXPECT_LT(s, 10.0);
  std::printf("[knn] 1024 queries x 4096 states x 576-d, k=64: %.3f s\n", s);
}

// The kNN keys: ForwardOptions::final_states returns every row's RmsNorm(h)·output_norm (the head's
// input) without computing logits, equal to the rows the observer sees with all_logits.
TEST(KnnLmTest, ForwardFinalStatesAreTheHeadInputWithoutLogits) {
  std::unique_ptr<Backend> backend = std::move(*CreateCpuBackend({}));
  auto m = testing::TinyModel(backend.get());
  const std::vector<model::TokenId> ids = {10, 20, 30, 40, 50, 60, 70};
  const int64_t T = static_cast<int64_t>(ids.size());
  std::vector<float> observed;
  model::ForwardOptions with_logits;
  with_logits.all_logits = true;
  with_logits.observer = [&](const model::Intermediate& im) {
    if (im.name == "output_norm") {
      observed.assign(im.value.data_as<float>(), im.value.data_as<float>() + im.value.numel());
    }
  };
  ASSERT_TRUE(m->Forward(ids, nullptr, with_logits).ok());
  ASSERT_EQ(observed.size(), static_cast<size_t>(T * testing::kEmbd));
  model::ForwardOptions states_only;
  states_only.compute_logits = false;
  states_only.final_states = true;
  auto r = m->Forward(ids, nullptr, states_only);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->logits.defined());
  ASSERT_TRUE(r->final_states.defined());
  ASSERT_EQ(r->final_states.shape(), (Shape{T, testing::kEmbd}));
  for (int64_t i = 0; i < T * testing::kEmbd; ++i) {
    EXPECT_FLOAT_EQ(r->final_states.data_as<float>()[i], observed[static_cast<size_t>(i)]);
  }
  states_only.last_layer = 1;
  EXPECT_FALSE(m->Forward(ids, nullptr, states_only).ok());  // needs every layer
}

}  // namespace
}  // namespace muninn::retriever
