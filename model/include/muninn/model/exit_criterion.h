// ExitCriterion: per-token adaptive compute for recurrent-depth models (specs/huginn.md §8.3).
//
// After core iteration t the forward reports the state s_t (and, for the logit criteria, the
// logits read out from it: latent norm → coda → norm → head, last position). The criterion fires
// when, at a check step (t >= min_steps and t % check_every == 0):
//   kKl               KL(p_prev ‖ p_t) = Σ p_prev (log p_prev − log p_t) < θ; p_prev starts
//                     uniform (1/V)                                      default θ 5e-4 (paper)
//   kMinpKl           the same after probabilities < 0.1·max are set to 1/V and renormalised
//                                                                         default θ 1e-5
//   kEntropyDiff      |H_t − H_prev| < θ, H_prev starting at 100          default θ 1e-3
//   kLatentDiff       ‖s_t − s_prev‖ / ‖s_t‖, mean over positions, < θ   default θ 0.03
//   kCosine           1 − cos(s_t, s_prev), mean over positions, < θ      default θ 1e-3
//   kArgmaxStability  the argmax was unchanged for >= θ consecutive checks default θ 5
//   kNone             never
// "prev" is the previous check's value (the previous iteration with check_every = 1). A threshold
// of exactly 0 never fires (so adaptive exit at θ = 0 equals fixed r). Logit criteria look at the
// last position only, latent ones average over positions, so a prompt exits together in prefill.
//
// Not thread-safe; one per generation, Reset() before every forward.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/core/tensor.h"

namespace muninn::model {

enum class ExitKind : uint8_t {
  kNone, kKl, kMinpKl, kEntropyDiff, kLatentDiff, kCosine, kArgmaxStability
};
const char* ExitKindName(ExitKind kind);  // "none", "kl", "minp-kl", ...

struct ExitOptions {
  ExitKind kind = ExitKind::kNone;
  double threshold = -1.0;   // < 0: the criterion's default (see the file comment)
  int32_t min_steps = 0;     // no exit before this iteration
  int32_t check_every = 1;   // evaluate every n-th iteration
  bool no_exit_in_prefill = false;  // the prompt always runs the full r

  // "kl", "minp-kl", "entropy-diff", "latent-diff", "cosine", "argmax-stability", "none".
  static Status ParseKind(std::string_view name, ExitKind* kind);
  double EffectiveThreshold() const;
  bool needs_logits() const;
  bool enabled() const { return kind != ExitKind::kNone; }
  Status Validate() const;
};

class ExitCriterion {
 public:
  explicit ExitCriterion(const ExitOptions& options) : options_(options) {}

  // Forgets the previous token's values (call before each forward).
  void Reset();
  // After iteration `step` (1-based): state [T, n_embd] f32, logits [1, V] f32 or nullptr.
  // True when the criterion fires.
  bool Update(int32_t step, const Tensor& state, const Tensor* logits);

 private:
  ExitOptions options_;
  bool have_prev_ = false;
  std::vector<double> prev_logp_;   // [V] log p of the previous check
  double prev_entropy_ = 100.0;
  std::vector<float> prev_state_;  // [T · n_embd]
  int32_t prev_argmax_ = -1;
  int32_t stable_ = 0;
};

}  // namespace muninn::model
