#include "muninn/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_set>

namespace muninn::model {

Status SamplerOptions::Validate() const {
  if (std::isnan(temperature)) return InvalidArgumentError("temperature is NaN");
  if (top_k < 0) return InvalidArgumentError("top-k must be >= 0 (0 = off), got " + std::to_string(top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return InvalidArgumentError("top-p must be in (0, 1] (1 = off), got " + std::to_string(top_p));
  }
  if (!(min_p >= 0.0f && min_p <= 1.0f)) {
    return InvalidArgumentError("min-p must be in [0, 1] (0 = off), got " + std::to_string(min_p));
  }
  if (!(repeat_penalty > 0.0f) || std::isinf(repeat_penalty)) {
    return InvalidArgumentError("repeat penalty must be a positive number (1 = off), got " +
                                std::to_string(repeat_penalty));
  }
  if (repeat_last_n < -1) {
    return InvalidArgumentError("repeat-last-n must be >= -1 (-1 = whole history), got " +
                                std::to_string(repeat_last_n));
  }
  return Status::Ok();
}

SamplerOptions SamplerOptions::Greedy() {
  SamplerOptions o;
  o.temperature = 0.0f;
  o.top_k = 0;
  o.top_p = 1.0f;
  o.min_p = 0.0f;
  o.repeat_penalty = 1.0f;
  return o;
}

StatusOr<Sampler> Sampler::Create(const SamplerOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  return Sampler(options);
}

Sampler::Sampler(const SamplerOptions& options) : options_(options) { Reseed(options.seed); }

void Sampler::Reseed(uint64_t seed) {
  // splitmix64 spreads any seed (0 included) over the four state words, never all zero.
  uint64_t z = seed;
  for (uint64_t& word : rng_) {
    z += 0x9e3779b97f4a7c15ULL;
    uint64_t x = z;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    word = x ^ (x >> 31);
  }
}

uint64_t Sampler::NextU64() {
  // xoshiro256** (Blackman & Vigna).
  auto rotl = [](uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
  const uint64_t result = rotl(rng_[1] * 5, 7) * 9;
  const uint64_t t = rng_[1] << 17;
  rng_[2] ^= rng_[0];
  rng_[3] ^= rng_[1];
  rng_[1] ^= rng_[2];
  rng_[0] ^= rng_[3];
  rng_[2] ^= t;
  rng_[3] = rotl(rng_[3], 45);
  return result;
}

double Sampler::NextUniform() {
  return static_cast<double>(NextU64() >> 11) * 0x1.0p-53;
}

TokenId Sampler::Sample(std::span<const float> logits, std::span<const TokenId> history) {
  MUNINN_CHECK(!logits.empty()) << "Sample needs a non-empty logits row";
  const int64_t n_vocab = static_cast<int64_t>(logits.size());

  // 1. Repetition penalty, once per distinct id in the window.
  std::span<const float> row = logits;
  if (options_.repeat_penalty != 1.0f && options_.repeat_last_n != 0 && !history.empty()) {
    penalized_.assign(logits.begin(), logits.end());
    const size_t window = options_.repeat_last_n < 0
                              ? history.size()
                              : std::min(history.size(), static_cast<size_t>(options_.repeat_last_n));
    std::unordered_set<TokenId> seen;
    for (TokenId id : history.subspan(history.size() - window)) {
      if (id < 0 || id >= n_vocab || !seen.insert(id).second) continue;
      float& l = penalized_[static_cast<size_t>(id)];
      l = l > 0.0f ? l / options_.repeat_penalty : l * options_.repeat_penalty;
    }
    row = penalized_;
  }

  // 2. Greedy.
  if (options_.temperature <= 0.0f) {
    TokenId best = 0;
    float best_logit = -INFINITY;
    bool found = false;
    for (int64_t i = 0; i < n_vocab; ++i) {
      const float l = row[static_cast<size_t>(i)];
      if (std::isnan(l)) continue;
      if (!found || l > best_logit) {
        best = static_cast<TokenId>(i);
        best_logit = l;
        found = true;
      }
    }
    return best;
  }

  // 3. Temperature; NaN candidates are dropped here.
  work_.clear();
  const float inv_t = 1.0f / options_.temperature;
  for (int64_t i = 0; i < n_vocab; ++i) {
    const float l = row[static_cast<size_t>(i)];
    if (std::isnan(l)) continue;
    work_.push_back({static_cast<TokenId>(i), l * inv_t, 0.0f});
  }
  if (work_.empty()) return 0;
  auto by_logit = [](const Candidate& a, const Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };

  // 4. Top-k, then sort what is left by descending logit.
  size_t n = work_.size();
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < n) {
    n = static_cast<size_t>(options_.top_k);
    std::nth_element(work_.begin(), work_.begin() + static_cast<std::ptrdiff_t>(n - 1), work_.end(),
                     by_logit);
    work_.resize(n);
  }
  std::sort(work_.begin(), work_.end(), by_logit);

  // Softmax in double over the survivors: a -inf max (all masked) degenerates to the first one.
  const double max_logit = work_[0].logit;
  if (std::isinf(max_logit)) return work_[0].id;
  double sum = 0.0;
  for (Candidate& c : work_) {
    c.p = static_cast<float>(std::exp(static_cast<double>(c.logit) - max_logit));
    sum += c.p;
  }
  for (Candidate& c : work_) c.p = static_cast<float>(c.p / sum);

  // 5. Top-p.
  if (options_.top_p < 1.0f) {
    double cum = 0.0;
    size_t keep = work_.size();
    for (size_t i = 0; i < work_.size(); ++i) {
      cum += work_[i].p;
      if (cum >= options_.top_p) {
        keep = i + 1;
        break;
      }
    }
    work_.resize(keep);
  }

  // 6. Min-p (relative to the most likely token, which is first).
  if (options_.min_p > 0.0f) {
    const float threshold = options_.min_p * work_[0].p;
    size_t keep = 1;
    while (keep < work_.size() && work_[keep].p >= threshold) ++keep;
    work_.resize(keep);
  }

  // 7. Draw.
  double mass = 0.0;
  for (const Candidate& c : work_) mass += c.p;
  const double u = NextUniform() * mass;
  double cum = 0.0;
  for (const Candidate& c : work_) {
    cum += c.p;
    if (u < cum) return c.id;
  }
  return work_.back().id;  // rounding left u at the very top
}

}  // namespace muninn::model
