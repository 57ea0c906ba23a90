#include "muninn/core/optimizer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <string>

namespace muninn {

Status AdamWOptions::Validate() const {
  const auto beta_ok = [](float b) { return std::isfinite(b) && b >= 0.0f && b < 1.0f; };
  if (!beta_ok(beta1) || !beta_ok(beta2)) {
    return InvalidArgumentError("AdamW: beta1 and beta2 must be in [0, 1), got " +
                                std::to_string(beta1) + ", " + std::to_string(beta2));
  }
  if (!(std::isfinite(eps) && eps > 0.0f)) {
    return InvalidArgumentError("AdamW: eps must be > 0, got " + std::to_string(eps));
  }
  if (!(std::isfinite(weight_decay) && weight_decay >= 0.0f)) {
    return InvalidArgumentError("AdamW: weight_decay must be >= 0, got " +
                                std::to_string(weight_decay));
  }
  return Status::Ok();
}

AdamWScalars AdamWStepScalars(const AdamWOptions& o, int64_t t, float lr) {
  const double td = static_cast<double>(std::max<int64_t>(t, 1));
  const auto bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(o.beta1), td));
  const auto bc2_sqrt =
      static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(o.beta2), td)));
  return {lr / bc1, bc2_sqrt, 1.0f - lr * o.weight_decay};
}

void AdamWStep(const AdamWOptions& o, int64_t t, float lr, float* param, const float* grad,
               float* m, float* v, int64_t n) {
  const auto [step_size, bc2_sqrt, decay] = AdamWStepScalars(o, t, lr);
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i];
    float p = param[i] * decay;
    const float mi = o.beta1 * m[i] + (1.0f - o.beta1) * g;
    const float vi = o.beta2 * v[i] + (1.0f - o.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    p -= step_size * mi / (std::sqrt(vi) / bc2_sqrt + o.eps);
    param[i] = p;
  }
}

Status LrSchedule::Validate() const {
  if (!(std::isfinite(peak_lr) && peak_lr > 0.0f)) {
    return InvalidArgumentError("learning-rate schedule: peak_lr must be > 0, got " +
                                std::to_string(peak_lr));
  }
  if (total_steps < 1 || warmup_steps < 0 || warmup_steps > total_steps) {
    return InvalidArgumentError(
        "learning-rate schedule: need total_steps >= 1 and 0 <= "
        "warmup_steps <= total_steps, got warmup " +
        std::to_string(warmup_steps) + ", total " + std::to_string(total_steps));
  }
  if (!(min_lr_ratio >= 0.0f && min_lr_ratio <= 1.0f)) {
    return InvalidArgumentError("learning-rate schedule: min_lr_ratio must be in [0, 1], got " +
                                std::to_string(min_lr_ratio));
  }
  return Status::Ok();
}

float LrSchedule::LrAt(int64_t step) const {
  step = std::max<int64_t>(step, 0);
  if (step < warmup_steps) {
    return static_cast<float>(static_cast<double>(peak_lr) * static_cast<double>(step) /
                              static_cast<double>(warmup_steps));
  }
  const double span = static_cast<double>(std::max<int64_t>(total_steps - warmup_steps, 1));
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / span);
  double f = 1.0;
  switch (decay) {
    case LrDecay::kConstant:
      f = 1.0;
      break;
    case LrDecay::kLinear:
      f = 1.0 - progress;
      break;
    case LrDecay::kCosine:
      f = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
      break;
  }
  const double r = decay == LrDecay::kConstant ? 1.0 : min_lr_ratio;
  return static_cast<float>(peak_lr * (r + (1.0 - r) * f));
}

double GlobalGradNorm(std::span<const std::span<const float>> grads) {
  double ss = 0.0;
  for (const std::span<const float> g : grads) {
    for (const float x : g) ss += static_cast<double>(x) * x;
  }
  return std::sqrt(ss);
}

float ClipFactor(double norm, float max_norm) {
  if (!std::isfinite(norm)) return std::numeric_limits<float>::quiet_NaN();
  if (max_norm <= 0.0f) return 1.0f;
  return static_cast<float>(std::min(1.0, static_cast<double>(max_norm) / (norm + 1e-6)));
}

}  // namespace muninn
