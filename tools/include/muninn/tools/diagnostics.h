// Diagnostics that separate a memory-mechanism bug from a model limit (specs/memory_modes.md §3),
// behind `muninn eval diagnose loss|attention|heads`:
//
//  * Loss delta by position: NLL(memory) − NLL(no memory) per position inside the scored window,
//    averaged over windows and bucketed — is memory's penalty concentrated at the window's start?
//  * Attention mass on memory per (layer, head), with and without the gold chunk on a passkey
//    prompt.
//  * Retrieval heads (Wu et al. 2024, arXiv 2404.15574): on an in-window passkey with full
//    attention, which (layer, head) pairs attend to the key's tokens while the digits are produced.
//
// Attention probabilities are *recomputed* here in a naive float64 reference way from the model's
// observed intermediates — `q` (after RoPE), `k_pre_rope` and `v` per layer (model.h) — and the
// memory K handed to the forward, for a handful of query rows; the attention kernels are untouched.
// The recomputation is checked against the forward's own `attn_out` (tests/tools).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "muninn/core/backend.h"
#include "muninn/core/status.h"
#include "muninn/model/model.h"
#include "muninn/retriever/long_context_session.h"
#include "muninn/tools/evals.h"

namespace muninn::tools {

// ---- loss delta by position ----------------------------------------------------------------
struct LossBucket {
  int64_t first = 0;  // positions [first, end) of the scored log-probs
  int64_t end = 0;
  double nll_memory = 0.0;  // mean over positions and windows
  double nll_none = 0.0;
  double delta() const { return nll_memory - nll_none; }
};

// `memory[w][i]`, `none[w][i]`: log p of position i of window w with and without memory (the same
// tokens; every window the same length). InvalidArgument for empty or mismatched inputs.
StatusOr<std::vector<LossBucket>> LossDeltaByPosition(const std::vector<std::vector<float>>& memory,
                                                      const std::vector<std::vector<float>>& none,
                                                      int64_t n_buckets);

// Runs the perplexity protocol (RunPerplexity, evals.h; no full-attention pass) and returns both
// sessions' log-probs of the scored tokens, window by window.
struct LossRuns {
  std::vector<std::vector<float>> memory;
  std::vector<std::vector<float>> none;
};
StatusOr<LossRuns> RunLossRuns(retriever::LongContextSession& memory_session,
                               retriever::LongContextSession& plain_session, std::string_view text,
                               const PerplexityOptions& options);

// ---- attention recomputation ---------------------------------------------------------------
// Collects q (post-RoPE), pre-RoPE k and v of chosen layers over one or more forwards on the same
// sequence (a prompt, then generated tokens), row-appended, plus attn_out for checking.
// Install observer() as ForwardOptions::observer. Thread-compatible.
class AttentionTrace {
 public:
  // `device`: the forward's backend when it is not the CPU (not owned): the intermediates live
  // there and are copied to the host as they come (null: they are host tensors).
  AttentionTrace(const model::ModelConfig& config, std::vector<int32_t> layers,
                 Backend* device = nullptr);
  model::ForwardObserver observer();
  // The first intermediate the observer could not read (a failed device copy; one on a device
  // with no `device` backend to copy it); OK otherwise. Check it after each forward.
  const Status& status() const { return status_; }
  int64_t n_rows() const;  // sequence rows seen so far
  const std::vector<int32_t>& layers() const { return layers_; }
  // attn_out row `row` of `layer` as the forward computed it ([n_embd]).
  std::span<const float> attn_out(int32_t layer, int64_t row) const;

  // Attention probabilities of query `row` at `layer`, every head, over [memory ; rows 0..row]
  // (causal, as in a cache starting at position 0): [n_head, M + row + 1] row-major.
  // `mem_k` [M, n_head_kv, head_dim] f32 host (as fetched from the bank) or undefined. Local keys
  // are rotated with `backend`'s RoPE at positions 0..row, on the host: `backend` must be a CPU
  // backend. Scale 1/sqrt(head_dim).
  StatusOr<std::vector<double>> Probabilities(Backend& backend, int32_t layer, int64_t row,
                                              const Tensor& mem_k) const;
  // Σ_j p_j v_j per head for those probabilities: [n_head · head_dim] (the attention output
  // before Wo), with `mem_v` [M, n_head_kv, head_dim] matching mem_k.
  StatusOr<std::vector<float>> Output(std::span<const double> probs, int32_t layer, int64_t row,
                                      const Tensor& mem_v) const;

 private:
  struct Layer {
    std::vector<float> q;       // [rows, n_head, hd] post-RoPE
    std::vector<float> k;       // [rows, n_head_kv, hd] pre-RoPE
    std::vector<float> v;       // [rows, n_head_kv, hd]
    std::vector<float> attn_out;  // [rows, n_embd]
  };
  const Layer* Find(int32_t layer) const;
  model::ModelConfig config_;
  std::vector<int32_t> layers_;
  std::vector<Layer> data_;  // parallel to layers_
  Backend* device_ = nullptr;
  Status status_;
};

// Sum of `probs` [n_head, n_keys] over key ranges [first, end) per head: [n_head].
std::vector<double> MassOn(std::span<const double> probs, int64_t n_head, int64_t n_keys,
                           std::span<const std::pair<int64_t, int64_t>> ranges);

// ---- memory mass on a passkey prompt -------------------------------------------------------
struct MemoryMassOptions {
  int64_t length = 4096;        // prompt tokens
  double depth = 0.5;           // key position
  int64_t local_tokens = 1024;  // the window; the rest is ingested
  int64_t query_rows = 16;      // the last rows of the window (the question) whose attention is read
  uint64_t seed = 1;
};
struct HeadMass {
  int32_t layer = 0;
  int32_t head = 0;
  double memory = 0.0;  // mean over query rows of the probability mass on memory
  double gold = 0.0;    // ... on the gold chunk's tokens (0 without it)
};
struct MemoryMassResult {
  bool gold_retrieved = false;  // the retriever found the gold chunk by itself
  int64_t memory_tokens_with = 0;
  int64_t memory_tokens_without = 0;
  std::vector<HeadMass> with_gold;     // memory = retrieved chunks ∪ gold
  std::vector<HeadMass> without_gold;  // memory = retrieved chunks \ gold
};
// `session` must have memory on and an empty bank; the layers read are its retrieval layers.
StatusOr<MemoryMassResult> RunMemoryMass(retriever::LongContextSession& session,
                                         const MemoryMassOptions& options);

// ---- retrieval heads ----------------------------------------------------------------------
struct RetrievalHeadOptions {
  int64_t length = 1024;  // prompt tokens, all in the window (full attention)
  std::vector<double> depths = {0.1, 0.3, 0.5, 0.7, 0.9};
  int64_t max_answer_tokens = 8;
  uint64_t seed = 1;
};
struct HeadScore {
  int32_t layer = 0;
  int32_t head = 0;
  double key_mass = 0.0;    // mean attention mass on the key's tokens over answer-digit steps
  double copy_score = 0.0;  // Wu et al.: fraction of digit steps whose top-attended token is in the
                            // key and equals the token produced
};
struct RetrievalHeadResult {
  int64_t trials = 0;
  int64_t passed = 0;       // the greedy answer contained the key
  int64_t digit_steps = 0;  // answer steps that produced a digit (the scores' denominator)
  std::vector<HeadScore> heads;  // every (layer, head), best first (copy_score, then key_mass)
};
// Runs the model directly (no memory); `tokenizer` must be the model's.
StatusOr<RetrievalHeadResult> RunRetrievalHeads(model::Model& model,
                                                const model::Tokenizer& tokenizer,
                                                const RetrievalHeadOptions& options);

// Token index ranges [first, end) of `ids` whose decoded text overlaps an occurrence of `needle`
// (tokens decoded one by one and concatenated).
std::vector<std::pair<int64_t, int64_t>> TokenSpansOf(const model::Tokenizer& tokenizer,
                                                      std::span<const model::TokenId> ids,
                                                      std::string_view needle);

nlohmann::json ToJson(const std::vector<LossBucket>& buckets);
nlohmann::json ToJson(const MemoryMassResult& r);
nlohmann::json ToJson(const RetrievalHeadResult& r, int64_t top);

}  // namespace muninn::tools
