#include "muninn/core/backend.h"

#include "muninn/core/train_ops.h"

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

StatusOr<Tensor> OnHost(Backend& backend, const Tensor& t) {
  if (t.device().is_cpu() && t.is_contiguous()) return t;
  return CopyToHost(backend, t);
}

StatusOr<Tensor> ToBackend(Backend& backend, const Tensor& t) {
  if (t.device() == backend.device()) return t;
  ASSIGN_OR_RETURN(Tensor moved, backend.Allocate(t.dtype(), t.shape()));
  RETURN_IF_ERROR(backend.Transfer(t, &moved));
  return moved;
}

Status CheckMatMulSharedArgs(const Backend& backend, const Tensor& x,
                             std::span<const Tensor* const> ws, std::span<Tensor* const> outs) {
  if (ws.empty() || ws.size() != outs.size()) {
    return InvalidArgumentError("MatMulShared: needs as many outputs as weights, at least one; got " +
                                std::to_string(ws.size()) + " weights and " +
                                std::to_string(outs.size()) + " outputs");
  }
  if (!x.defined()) return InvalidArgumentError("MatMulShared: x is an undefined tensor");
  if (x.ndim() < 1 || x.ndim() > 2) {
    return InvalidArgumentError("MatMulShared: x must be [M, K] or [K], got " +
                                x.shape().ToString());
  }
  const int64_t k = x.dim(-1);
  for (size_t i = 0; i < ws.size(); ++i) {
    const std::string at = "MatMulShared: pair " + std::to_string(i) + ": ";
    if (ws[i] == nullptr || outs[i] == nullptr || !ws[i]->defined() || !outs[i]->defined()) {
      return InvalidArgumentError(at + "weight and output must be defined tensors");
    }
    const Tensor& w = *ws[i];
    const Tensor& out = *outs[i];
    if (!backend.SupportsOp(OpDesc{OpKind::kMatMul, w.dtype()})) {
      return InvalidArgumentError(at + backend.name() + " has no MatMul for " +
                                  std::string(DTypeName(w.dtype())) + " weights");
    }
    if (w.ndim() != 2 || w.dim(1) != k || out.ndim() != x.ndim() || out.dim(-1) != w.dim(0) ||
        (x.ndim() == 2 && out.dim(0) != x.dim(0))) {
      return InvalidArgumentError(at + "expected w [N, " + std::to_string(k) +
                                  "] and out [M, N] for x " + x.shape().ToString() + "; got w " +
                                  w.shape().ToString() + ", out " + out.shape().ToString());
    }
    if (ViewsOverlap(out, x) || ViewsOverlap(out, w)) {
      return InvalidArgumentError(at + "out must not overlap x or w");
    }
    for (size_t j = 0; j < i; ++j) {
      if (ViewsOverlap(out, *outs[j]) || ViewsOverlap(out, *ws[j]) ||
          ViewsOverlap(*outs[j], w)) {
        return InvalidArgumentError(at + "out overlaps pair " + std::to_string(j) +
                                    "'s weight or output, or pair " + std::to_string(j) +
                                    "'s output overlaps this weight");
      }
    }
  }
  return Status::Ok();
}

Status Backend::MatMulShared(const Tensor& x, std::span<const Tensor* const> ws,
                             std::span<Tensor* const> outs) {
  RETURN_IF_ERROR(CheckMatMulSharedArgs(*this, x, ws, outs));
  for (size_t i = 0; i < ws.size(); ++i) RETURN_IF_ERROR(MatMul(x, *ws[i], outs[i]));
  return Status::Ok();
}

namespace {

// A temporary like `like` (f32, its shape) on `backend`.
StatusOr<Tensor> F32Like(Backend& backend, const Tensor& like, std::string_view op,
                         std::string_view what) {
  if (!like.defined()) {
    return InvalidArgumentError(std::string(op) + ": " + std::string(what) +
                                " is an undefined tensor");
  }
  return backend.Allocate(DType::kF32, like.shape());
}

}  // namespace

Status Backend::RopeAndStoreKv(const Tensor& positions, const RopeParams& params, Tensor* q,
                               Tensor* k, const Tensor& v, Tensor* k_cache, Tensor* v_cache) {
  if (q == nullptr || k == nullptr || k_cache == nullptr || v_cache == nullptr) {
    return InvalidArgumentError("RopeAndStoreKv: q, k, k_cache and v_cache must not be null");
  }
  RETURN_IF_ERROR(Rope(*q, positions, params, q));
  RETURN_IF_ERROR(Rope(*k, positions, params, k));
  RETURN_IF_ERROR(Copy(*k, k_cache));
  return Copy(v, v_cache);
}

Status Backend::MatMulAdd(const Tensor& x, const Tensor& w, Tensor* out) {
  if (out == nullptr) return InvalidArgumentError("MatMulAdd: out is null");
  if (ViewsOverlap(*out, x) || ViewsOverlap(*out, w)) {
    return InvalidArgumentError("MatMulAdd: out must not overlap x or w");
  }
  ASSIGN_OR_RETURN(Tensor product, F32Like(*this, *out, "MatMulAdd", "out"));
  RETURN_IF_ERROR(MatMul(x, w, &product));
  return Add(*out, product, out);
}

Status Backend::RmsNormMatMulShared(const Tensor& x, const Tensor& norm_weight, float eps,
                                    std::span<const Tensor* const> ws,
                                    std::span<Tensor* const> outs) {
  RETURN_IF_ERROR(CheckMatMulSharedArgs(*this, x, ws, outs));
  for (Tensor* out : outs) {
    if (norm_weight.defined() && ViewsOverlap(*out, norm_weight)) {
      return InvalidArgumentError("RmsNormMatMulShared: an output overlaps the norm weight");
    }
  }
  ASSIGN_OR_RETURN(Tensor normed, F32Like(*this, x, "RmsNormMatMulShared", "x"));
  RETURN_IF_ERROR(RmsNorm(x, norm_weight, eps, &normed));
  return MatMulShared(normed, ws, outs);
}

Status Backend::SwiGluMatMulAdd(const Tensor& gate, const Tensor& up, const Tensor& w,
                                Tensor* out) {
  if (out == nullptr) return InvalidArgumentError("SwiGluMatMulAdd: out is null");
  if (ViewsOverlap(*out, gate) || ViewsOverlap(*out, up) || ViewsOverlap(*out, w)) {
    return InvalidArgumentError("SwiGluMatMulAdd: out must not overlap gate, up or w");
  }
  ASSIGN_OR_RETURN(Tensor act, F32Like(*this, gate, "SwiGluMatMulAdd", "gate"));
  RETURN_IF_ERROR(SwiGlu(gate, up, &act));
  return MatMulAdd(act, w, out);
}

StatusOr<std::unique_ptr<TrainOps>> Backend::CreateTrainOps(ThreadPool* /*pool*/) {
  return UnimplementedError("backend " + name() + " has no training ops");
}

}  // namespace muninn
