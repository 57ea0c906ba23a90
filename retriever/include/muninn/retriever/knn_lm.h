// kNN-LM (Khandelwal et al. 2020, "Generalization through Memorization"): a datastore of
// (final hidden state → next token) pairs over past text, and the mixing of its neighbour
// distribution into the model's next-token distribution:
//
//   p(w) = (1 − λ) · p_LM(w) + λ · p_kNN(w),
//   p_kNN(w) = Σ_{n ∈ kNN(q), token(n) = w} exp(−d(q, n) / T)  /  Σ_{n ∈ kNN(q)} exp(−d(q, n) / T)
//
// where q is the query position's final hidden state *after* the final norm (RmsNorm(h) ·
// output_norm, the input of the output head; ForwardOptions::final_states), d is the squared L2
// distance and kNN(q) the k stored states nearest to q (exact search). Everything here is done in
// the log domain with log-sum-exp, so no exp underflows for large distances.
//
// Exact properties the tests rely on: λ = 0 returns the model's numbers unchanged (bit for bit);
// a query whose neighbours are all missing (empty datastore) also returns them unchanged.
//
// Thread-compatible: a KnnDatastore is immutable after Create, so concurrent searches are safe.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/model/tokenizer.h"

namespace muninn::retriever {

// The k nearest stored states of Q queries, row-major [Q, k]. A query with fewer than k stored
// states has its tail padded with token = -1 (ignored by the mixing).
struct KnnNeighbours {
  int64_t n_queries = 0;
  int64_t k = 0;
  std::vector<float> dist;             // [Q, k] squared L2, ascending per row
  std::vector<model::TokenId> token;   // [Q, k] next token of each neighbour, -1 = padding
  std::vector<int64_t> index;          // [Q, k] row in the datastore, -1 = padding
};

class KnnDatastore {
 public:
  // `keys` [N, dim] f32 row-major, `next_tokens` [N]. Rows whose next token is negative (a chunk's
  // last token with no following chunk) are dropped: they could never vote for a token.
  // InvalidArgument when the sizes disagree or dim < 1.
  static StatusOr<KnnDatastore> Create(std::span<const float> keys,
                                       std::span<const model::TokenId> next_tokens, int64_t dim);
  KnnDatastore() = default;

  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  int64_t dim() const { return dim_; }
  bool empty() const { return tokens_.empty(); }
  std::span<const float> keys() const { return keys_; }             // [size, dim]
  std::span<const model::TokenId> tokens() const { return tokens_; }  // [size]

  // Exact k-nearest search by squared L2 for `queries` [n_queries, dim] f32 row-major.
  // Distances come from ‖q‖² − 2 q·x + ‖x‖² with one SGEMM per block of queries (clamped at 0).
  // Ties are broken by the lower datastore row. InvalidArgument for a size mismatch or k < 1.
  StatusOr<KnnNeighbours> Search(std::span<const float> queries, int64_t n_queries,
                                 int64_t k) const;

 private:
  int64_t dim_ = 0;
  std::vector<float> keys_;            // [N, dim]
  std::vector<float> sq_norms_;        // [N] ‖x‖²
  std::vector<model::TokenId> tokens_; // [N]
};

// log p_kNN(w) over one query's neighbours (`dist`, `token` of length k): −inf when no neighbour
// votes for w (or none is valid). `temperature` > 0.
double KnnLogProb(std::span<const float> dist, std::span<const model::TokenId> token,
                  model::TokenId w, float temperature);

// log((1 − λ) p_LM(w) + λ p_kNN(w)) for one position, given the model's log p_LM(w).
// λ = 0, or no valid neighbour: exactly `lm_logprob`. λ in [0, 1], temperature > 0 (checked by the
// caller's options; MUNINN_CHECK here).
float MixLogProb(float lm_logprob, std::span<const float> dist,
                 std::span<const model::TokenId> token, model::TokenId w, float lambda,
                 float temperature);

// Rewrites one row of logits [n_vocab] into the mixed distribution's log-probabilities
// log((1 − λ) softmax(logits) + λ p_kNN) — valid logits for any sampler. λ = 0 or no valid
// neighbour leaves the row untouched. Neighbour tokens outside [0, n_vocab) are ignored.
void MixLogits(std::span<float> logits, std::span<const float> dist,
               std::span<const model::TokenId> token, float lambda, float temperature);

}  // namespace muninn::retriever
