#include "muninn/core/backend.h"

#include <cmath>
#include <string>

namespace muninn {

Status RopeParams::Validate() const {
  if (n_rot < 0 || n_rot % 2 != 0) {
    return InvalidArgumentError("RoPE n_rot must be even and >= 0, got " + std::to_string(n_rot));
  }
  if (!(freq_base > 0.0f) || !std::isfinite(freq_base)) {
    return InvalidArgumentError("RoPE freq_base must be a positive finite number");
  }
  if (!(factor > 0.0f) || !std::isfinite(factor)) {
    return InvalidArgumentError("RoPE scaling factor must be a positive finite number");
  }
  if (scaling == RopeScaling::kYarn) {
    if (original_ctx <= 0) return InvalidArgumentError("YaRN original_ctx must be > 0");
    if (!(beta_fast > beta_slow) || !(beta_slow > 0.0f)) {
      return InvalidArgumentError("YaRN needs beta_fast > beta_slow > 0");
    }
  }
  if (!(attn_factor > 0.0f) || !std::isfinite(attn_factor)) {
    return InvalidArgumentError("RoPE attn_factor must be a positive finite number");
  }
  return Status::Ok();
}

Status AttentionParams::Validate() const {
  if (!std::isfinite(scale) || scale < 0.0f) {
    return InvalidArgumentError("attention scale must be finite and >= 0 (0 = 1/sqrt(head_dim))");
  }
  return Status::Ok();
}

Status AttentionParams::Validate(int64_t n_head) const {
  RETURN_IF_ERROR(Validate());
  if (mem_bias != nullptr) {
    for (int64_t h = 0; h < n_head; ++h) {
      if (!std::isfinite(mem_bias[h])) {
        return InvalidArgumentError("attention mem_bias[" + std::to_string(h) +
                                    "] is not finite (the per-head memory logit biases must be "
                                    "finite numbers)");
      }
    }
  }
  return Status::Ok();
}

Status CheckTransferArgs(const Backend& backend, const Tensor& src, const Tensor* dst) {
  if (dst == nullptr || !src.defined() || !dst->defined()) {
    return InvalidArgumentError("Transfer: src and dst must be defined tensors");
  }
  if (src.dtype() != dst->dtype() || !(src.shape() == dst->shape())) {
    return InvalidArgumentError("Transfer needs equal dtype and shape: " + src.DebugString() +
                                " vs " + dst->DebugString());
  }
  const Device here = backend.device();
  const bool src_here = src.device() == here, dst_here = dst->device() == here;
  if ((!src_here && !src.device().is_cpu()) || (!dst_here && !dst->device().is_cpu()) ||
      (!src_here && !dst_here)) {
    return InvalidArgumentError("Transfer on " + backend.name() + " copies between the host and " +
                                backend.name() + "; got " + src.device().ToString() + " -> " +
                                dst->device().ToString());
  }
  return Status::Ok();
}

StatusOr<Tensor> CopyToHost(Backend& backend, const Tensor& t) {
  if (t.device().is_cpu()) return t.Contiguous();
  ASSIGN_OR_RETURN(Tensor host, Tensor::Empty(t.dtype(), t.shape()));
  RETURN_IF_ERROR(backend.Transfer(t, &host));
  return host;
}

}  // namespace muninn
