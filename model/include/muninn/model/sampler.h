// Sampler: picks the next token from a row of logits.
//
// The chain, in this order (Hugging Face's order, so --temp changes which tokens survive top-p):
//   1. repetition penalty on the ids among the last `repeat_last_n` of the history (CTRL rule:
//      a positive logit is divided by the penalty, a negative one multiplied);
//   2. temperature 0 (or below): greedy argmax, lowest id on ties; nothing below applies;
//   3. logits / temperature;
//   4. top-k: keep the k largest (0 = off);
//   5. top-p: keep the smallest prefix, by descending probability, whose mass reaches p (1 = off);
//   6. min-p: keep tokens with probability >= min_p · the largest probability (0 = off);
//   7. draw from the renormalised distribution with the sampler's own RNG.
// NaN logits never win and are never drawn. At least one token always survives.
//
// Deterministic: the same seed, logits and history give the same token on every platform (the RNG
// is xoshiro256** seeded through splitmix64, and the uniform draw is built from its bits, not from
// std:: distributions). Not thread-safe (the RNG is state); one sampler per sequence.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/model/tokenizer.h"

namespace muninn::model {

struct SamplerOptions {
  float temperature = 0.8f;     // <= 0: greedy
  int32_t top_k = 40;           // >= 0; 0 = off
  float top_p = 0.95f;          // (0, 1]; 1 = off
  float min_p = 0.05f;          // [0, 1]; 0 = off
  float repeat_penalty = 1.0f;  // > 0; 1 = off
  int32_t repeat_last_n = 64;   // history window the penalty looks at; -1 = all of it, 0 = none
  uint64_t seed = 0;
  Status Validate() const;
  // Greedy decoding: temperature 0, every filter off.
  static SamplerOptions Greedy();
};

class Sampler {
 public:
  // InvalidArgument when `options` does not validate.
  static StatusOr<Sampler> Create(const SamplerOptions& options);

  // The next token for `logits` ([n_vocab], must not be empty). `history` are the ids so far
  // (prompt and generated) for the repetition penalty; ids outside the vocabulary are ignored.
  TokenId Sample(std::span<const float> logits, std::span<const TokenId> history);

  // Restarts the random stream as if created with `seed`.
  void Reseed(uint64_t seed);
  const SamplerOptions& options() const { return options_; }

  // A uniform double in [0, 1) from the next 53 RNG bits (exposed for tests).
  double NextUniform();

 private:
  explicit Sampler(const SamplerOptions& options);
  uint64_t NextU64();

  SamplerOptions options_;
  std::array<uint64_t, 4> rng_{};
  struct Candidate {
    TokenId id;
    float logit;
    float p;
  };
  std::vector<Candidate> work_;   // reused between calls: [n_vocab] candidates
  std::vector<float> penalized_;  // reused: [n_vocab] logits after the penalty
};

}  // namespace muninn::model
