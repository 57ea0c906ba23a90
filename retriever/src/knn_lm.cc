#include "muninn/retriever/knn_lm.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "muninn/core/check.h"

namespace muninn::retriever {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// log(exp(a) + exp(b)), safe for -inf on either side.
double LogAddExp(double a, double b) {
  if (a == kNegInf) return b;
  if (b == kNegInf) return a;
  const double m = std::max(a, b);
  return m + std::log1p(std::exp(-std::abs(a - b)));
}

// log Σ_n exp(−dist_n / T) over valid neighbours (token >= 0), and only those with token == w when
// w >= 0. −inf when none qualifies.
double LogSumVotes(std::span<const float> dist, std::span<const model::TokenId> token,
                   model::TokenId w, float temperature) {
  double m = kNegInf;
  for (size_t i = 0; i < dist.size(); ++i) {
    if (token[i] < 0 || (w >= 0 && token[i] != w)) continue;
    m = std::max(m, -static_cast<double>(dist[i]) / temperature);
  }
  if (m == kNegInf) return kNegInf;
  double s = 0.0;
  for (size_t i = 0; i < dist.size(); ++i) {
    if (token[i] < 0 || (w >= 0 && token[i] != w)) continue;
    s += std::exp(-static_cast<double>(dist[i]) / temperature - m);
  }
  return m + std::log(s);
}

bool AnyValid(std::span<const model::TokenId> token) {
  return std::any_of(token.begin(), token.end(), [](model::TokenId t) { return t >= 0; });
}

}  // namespace

StatusOr<KnnDatastore> KnnDatastore::Create(std::span<const float> keys,
                                            std::span<const model::TokenId> next_tokens,
                                            int64_t dim) {
  if (dim < 1) return InvalidArgumentError("a kNN datastore needs dim >= 1");
  if (keys.size() != next_tokens.size() * static_cast<size_t>(dim)) {
    return InvalidArgumentError("kNN datastore: " + std::to_string(keys.size()) +
                                " key values for " + std::to_string(next_tokens.size()) +
                                " next tokens of dim " + std::to_string(dim) +
                                "; the states must be [N, dim] with one next token per row");
  }
  KnnDatastore ds;
  ds.dim_ = dim;
  size_t n_valid = 0;
  for (model::TokenId t : next_tokens) n_valid += t >= 0 ? 1 : 0;
  ds.keys_.reserve(n_valid * static_cast<size_t>(dim));
  ds.tokens_.reserve(n_valid);
  ds.sq_norms_.reserve(n_valid);
  for (size_t i = 0; i < next_tokens.size(); ++i) {
    if (next_tokens[i] < 0) continue;
    const float* row = keys.data() + i * static_cast<size_t>(dim);
    double sq = 0.0;
    for (int64_t j = 0; j < dim; ++j) sq += static_cast<double>(row[j]) * row[j];
    ds.keys_.insert(ds.keys_.end(), row, row + dim);
    ds.tokens_.push_back(next_tokens[i]);
    ds.sq_norms_.push_back(static_cast<float>(sq));
  }
  return ds;
}

StatusOr<KnnNeighbours> KnnDatastore::Search(std::span<const float> queries, int64_t n_queries,
                                             int64_t k) const {
  if (k < 1) return InvalidArgumentError("kNN search needs k >= 1, got " + std::to_string(k));
  if (n_queries < 0 || queries.size() != static_cast<size_t>(n_queries * dim_)) {
    return InvalidArgumentError("kNN search: " + std::to_string(queries.size()) +
                                " query values are not [" + std::to_string(n_queries) + ", " +
                                std::to_string(dim_) + "]");
  }
  KnnNeighbours out;
  out.n_queries = n_queries;
  out.k = k;
  const size_t total = static_cast<size_t>(n_queries * k);
  out.dist.assign(total, std::numeric_limits<float>::infinity());
  out.token.assign(total, -1);
  out.index.assign(total, -1);
  const int64_t n = size();
  if (n == 0 || n_queries == 0) return out;
  const int64_t kk = std::min(k, n);
  // Blocks of queries bound the [block, N] score buffer (256 × 4096 floats = 4 MiB).
  constexpr int64_t kBlock = 256;
  std::vector<float> dots(static_cast<size_t>(std::min(kBlock, n_queries) * n));  // [block, N]
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t b = 0; b < n_queries; b += kBlock) {
    const int64_t m = std::min(kBlock, n_queries - b);
    // dots[i, j] = q_i · x_j
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(dim_), 1.0f, queries.data() + b * dim_, static_cast<int>(dim_),
                keys_.data(), static_cast<int>(dim_), 0.0f, dots.data(), static_cast<int>(n));
    for (int64_t i = 0; i < m; ++i) {
      const float* q = queries.data() + (b + i) * dim_;
      double qsq = 0.0;
      for (int64_t j = 0; j < dim_; ++j) qsq += static_cast<double>(q[j]) * q[j];
      float* row = dots.data() + i * n;
      for (int64_t j = 0; j < n; ++j) {
        row[j] = std::max(0.0f, static_cast<float>(qsq) - 2.0f * row[j] + sq_norms_[static_cast<size_t>(j)]);
      }
      for (int64_t j = 0; j < n; ++j) order[static_cast<size_t>(j)] = j;
      const auto closer = [row](int64_t a, int64_t c) {
        return row[a] < row[c] || (row[a] == row[c] && a < c);
      };
      std::partial_sort(order.begin(), order.begin() + kk, order.end(), closer);
      const size_t base = static_cast<size_t>((b + i) * k);
      for (int64_t r = 0; r < kk; ++r) {
        const int64_t j = order[static_cast<size_t>(r)];
        out.dist[base + static_cast<size_t>(r)] = row[j];
        out.token[base + static_cast<size_t>(r)] = tokens_[static_cast<size_t>(j)];
        out.index[base + static_cast<size_t>(r)] = j;
      }
    }
  }
  return out;
}

double KnnLogProb(std::span<const float> dist, std::span<const model::TokenId> token,
                  model::TokenId w, float temperature) {
  MUNINN_CHECK(dist.size() == token.size());
  MUNINN_CHECK(temperature > 0.0f);
  if (w < 0) return kNegInf;
  const double all = LogSumVotes(dist, token, -1, temperature);
  if (all == kNegInf) return kNegInf;
  const double mine = LogSumVotes(dist, token, w, temperature);
  return mine == kNegInf ? kNegInf : mine - all;
}

float MixLogProb(float lm_logprob, std::span<const float> dist,
                 std::span<const model::TokenId> token, model::TokenId w, float lambda,
                 float temperature) {
  MUNINN_CHECK(lambda >= 0.0f && lambda <= 1.0f);
  if (lambda == 0.0f || !AnyValid(token)) return lm_logprob;
  const double lm = lambda == 1.0f ? kNegInf : std::log1p(-static_cast<double>(lambda)) + lm_logprob;
  const double knn = KnnLogProb(dist, token, w, temperature);
  const double kn = knn == kNegInf ? kNegInf : std::log(static_cast<double>(lambda)) + knn;
  return static_cast<float>(LogAddExp(lm, kn));
}

void MixLogits(std::span<float> logits, std::span<const float> dist,
               std::span<const model::TokenId> token, float lambda, float temperature) {
  MUNINN_CHECK(lambda >= 0.0f && lambda <= 1.0f);
  MUNINN_CHECK(temperature > 0.0f);
  if (lambda == 0.0f || !AnyValid(token) || logits.empty()) return;
  // log-softmax of the model's row, then scaled by (1 − λ).
  float mx = logits[0];
  for (float v : logits) mx = std::max(mx, v);
  double s = 0.0;
  for (float v : logits) s += std::exp(static_cast<double>(v - mx));
  const double lse = mx + std::log(s);
  const double log_keep = lambda == 1.0f ? kNegInf : std::log1p(-static_cast<double>(lambda));
  const double log_lambda = std::log(static_cast<double>(lambda));
  const int64_t n_vocab = static_cast<int64_t>(logits.size());
  std::vector<float> lm(logits.begin(), logits.end());
  for (float& v : logits) v = static_cast<float>(log_keep + (static_cast<double>(v) - lse));
  // Each distinct voted token once.
  for (size_t i = 0; i < token.size(); ++i) {
    const model::TokenId w = token[i];
    if (w < 0 || w >= n_vocab) continue;
    bool seen = false;
    for (size_t j = 0; j < i && !seen; ++j) seen = token[j] == w;
    if (seen) continue;
    const double a = log_keep + (static_cast<double>(lm[static_cast<size_t>(w)]) - lse);
    const double b = log_lambda + KnnLogProb(dist, token, w, temperature);
    logits[static_cast<size_t>(w)] = static_cast<float>(LogAddExp(a, b));
  }
}

}  // namespace muninn::retriever
