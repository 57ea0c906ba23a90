// The optimizer pieces of a training step: AdamW with decoupled weight decay and bias correction,
// the learning-rate schedule (linear warm-up, then constant, linear or cosine decay), and
// global-norm gradient clipping. Formulas follow PyTorch (torch.optim.AdamW,
// torch.nn.utils.clip_grad_norm_) and Hugging Face transformers' schedules, so a trainer can be
// compared step by step with a PyTorch + PEFT run.
//
// Thread-compatible: plain functions on caller-owned arrays.
#pragma once

#include <cstdint>
#include <span>

#include "muninn/core/status.h"

namespace muninn {

struct AdamWOptions {
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;  // decoupled: p -= lr · weight_decay · p (PyTorch's default 0.01)
  // InvalidArgument unless 0 <= beta < 1, eps > 0 and weight_decay >= 0 (all finite).
  Status Validate() const;
};

// The per-step scalars of AdamWStep for step t (1-based) and learning rate lr: bias corrections in
// double, then float. Shared with device implementations, which must give the same bits.
struct AdamWScalars {
  float step_size;  // lr / (1 - beta1^t)
  float bc2_sqrt;   // sqrt(1 - beta2^t)
  float decay;      // 1 - lr * weight_decay
};
AdamWScalars AdamWStepScalars(const AdamWOptions& options, int64_t t, float lr);

// One AdamW step t (1-based: the first step is 1) with learning rate lr on n parameters:
//   p ← p · (1 - lr · wd)
//   m ← β1 m + (1 - β1) g;   v ← β2 v + (1 - β2) g²
//   p ← p - (lr / (1 - β1^t)) · m / (sqrt(v) / sqrt(1 - β2^t) + eps)
// param, m, v are updated in place (m and v start at zero); grad is read.
void AdamWStep(const AdamWOptions& options, int64_t t, float lr, float* param, const float* grad,
               float* m, float* v, int64_t n);

enum class LrDecay : uint8_t { kConstant, kLinear, kCosine };

struct LrSchedule {
  float peak_lr = 5e-5f;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;  // decay reaches min_lr_ratio · peak_lr here
  LrDecay decay = LrDecay::kLinear;
  float min_lr_ratio = 0.0f;  // floor of the decay, as a fraction of peak_lr
  // InvalidArgument unless peak_lr > 0, 0 <= warmup_steps <= total_steps, total_steps >= 1 and
  // 0 <= min_lr_ratio <= 1.
  Status Validate() const;
  // The learning rate for the optimizer step that follows `step` completed steps (0-based, as
  // PyTorch's LambdaLR counts): peak · step / warmup during warm-up, then
  //   linear: peak · (r + (1 - r) · max(0, (total - step) / (total - warmup)))
  //   cosine: peak · (r + (1 - r) · 0.5 · (1 + cos(π · min(1, (step - warmup) / (total -
  //   warmup)))))
  // with r = min_lr_ratio (transformers' get_linear/cosine_schedule_with_warmup when r = 0).
  float LrAt(int64_t step) const;
};

// The L2 norm of all gradients together, summed in double in the order given.
double GlobalGradNorm(std::span<const std::span<const float>> grads);

// The factor clip_grad_norm_ multiplies every gradient by: min(1, max_norm / (norm + 1e-6)).
// max_norm <= 0 disables clipping (1). A non-finite norm returns NaN: the caller stops the run.
float ClipFactor(double norm, float max_norm);

}  // namespace muninn
