// TrainOps' entry points: every argument rule of train_ops.h is checked here, once for all
// implementations, before the kernel (a protected Do* virtual) runs.
#include "muninn/core/train_ops.h"

#include <cmath>
#include <limits>
#include <string>

namespace muninn {
namespace {

std::string Str(const Shape& s) { return s.ToString(); }

// An f32 packed tensor on `dev` of exactly `want` (an empty `want` skips the shape check).
Status CheckF32(const char* op, const char* what, const Tensor& t, Device dev, const Shape& want) {
  const std::string at = std::string(op) + ": " + what;
  if (!t.defined()) return InvalidArgumentError(at + " is undefined");
  if (t.dtype() != DType::kF32)
    return InvalidArgumentError(at + " must be f32, got " + t.DebugString());
  if (!t.is_contiguous()) {
    return InvalidArgumentError(at + " must be packed (contiguous), got " + t.DebugString());
  }
  if (t.device() != dev) {
    return InvalidArgumentError(at + " must be on " + dev.ToString() + ", got " + t.DebugString() +
                                " on " + t.device().ToString());
  }
  if (want.ndim() > 0 && !(t.shape() == want)) {
    return InvalidArgumentError(at + " must have shape " + Str(want) + ", got " + Str(t.shape()));
  }
  return Status::Ok();
}

Status CheckOut(const char* op, const char* what, const Tensor* t, Device dev, const Shape& want) {
  if (t == nullptr) return InvalidArgumentError(std::string(op) + ": " + what + " is null");
  return CheckF32(op, what, *t, dev, want);
}

// A 2-d f32 tensor's dims, for ops whose shapes follow from their first operand.
Status Check2d(const char* op, const char* what, const Tensor& t, Device dev) {
  RETURN_IF_ERROR(CheckF32(op, what, t, dev, Shape{}));
  if (t.ndim() != 2) {
    return InvalidArgumentError(std::string(op) + ": " + what + " must be 2-d, got " +
                                Str(t.shape()));
  }
  return Status::Ok();
}

Status NoOverlap(const char* op, const char* what, const Tensor& out,
                 std::initializer_list<const Tensor*> ins) {
  for (const Tensor* in : ins) {
    if (in != nullptr && in->defined() && ViewsOverlap(out, *in)) {
      return InvalidArgumentError(std::string(op) + ": " + what + " overlaps an input");
    }
  }
  return Status::Ok();
}

Status CheckLoraDims(const char* op, const LoraDims& d) {
  if (d.m < 0 || d.n_in <= 0 || d.n_out <= 0 || d.rank <= 0) {
    return InvalidArgumentError(std::string(op) +
                                ": LoRA dims need m >= 0 and n_in, n_out, rank > 0");
  }
  if (!(d.dropout >= 0.0f && d.dropout < 1.0f)) {
    return InvalidArgumentError(std::string(op) + ": LoRA dropout must be in [0, 1)");
  }
  if (!std::isfinite(d.scale))
    return InvalidArgumentError(std::string(op) + ": LoRA scale is not finite");
  return Status::Ok();
}

Status CheckAttentionDims(const char* op, const AttentionTrainDims& d) {
  const std::string at = std::string(op) + ": ";
  if (d.T < 0 || d.S < 0 || d.M < 0 || d.n_head <= 0 || d.n_head_kv <= 0 || d.d <= 0 || d.dv <= 0) {
    return InvalidArgumentError(at + "dims need T, S, M >= 0 and heads, head dims > 0");
  }
  if (d.n_head % d.n_head_kv != 0) {
    return InvalidArgumentError(at + "n_head_kv must divide n_head");
  }
  if (d.causal && d.T > d.S) return InvalidArgumentError(at + "causal attention needs T <= S");
  if (d.T > 0 && d.S + d.M == 0)
    return InvalidArgumentError(at + "queries but no keys (S = M = 0)");
  if (!std::isfinite(d.scale) || d.scale < 0.0f) {
    return InvalidArgumentError(at + "scale must be finite and >= 0");
  }
  return Status::Ok();
}

Status CheckAttentionInputs(const char* op, const AttentionTrainDims& d,
                            const AttentionTrainTensors& in, Device dev) {
  RETURN_IF_ERROR(CheckAttentionDims(op, d));
  RETURN_IF_ERROR(CheckF32(op, "q", in.q, dev, Shape{d.T, d.n_head, d.d}));
  RETURN_IF_ERROR(CheckF32(op, "k", in.k, dev, Shape{d.S, d.n_head_kv, d.d}));
  RETURN_IF_ERROR(CheckF32(op, "v", in.v, dev, Shape{d.S, d.n_head_kv, d.dv}));
  if (d.M > 0) {
    RETURN_IF_ERROR(CheckF32(op, "mem_k", in.mem_k, dev, Shape{d.M, d.n_head_kv, d.d}));
    RETURN_IF_ERROR(CheckF32(op, "mem_v", in.mem_v, dev, Shape{d.M, d.n_head_kv, d.dv}));
  } else if (in.mem_k.defined() || in.mem_v.defined()) {
    return InvalidArgumentError(std::string(op) + ": mem_k/mem_v given but dims.M is 0");
  }
  if (in.mem_q.defined()) {
    RETURN_IF_ERROR(CheckF32(op, "mem_q", in.mem_q, dev, Shape{d.T, d.n_head, d.d}));
  }
  if (in.mem_bias.defined()) {
    RETURN_IF_ERROR(CheckF32(op, "mem_bias", in.mem_bias, dev, Shape{d.n_head}));
  }
  return Status::Ok();
}

}  // namespace

Status TrainOps::Linear(const Tensor& x, const Tensor& w, Tensor* y) {
  const Device dev = device();
  RETURN_IF_ERROR(Check2d("Linear", "x", x, dev));
  RETURN_IF_ERROR(Check2d("Linear", "w", w, dev));
  if (w.dim(1) != x.dim(1)) {
    return InvalidArgumentError("Linear: w " + Str(w.shape()) + " does not fit x " +
                                Str(x.shape()));
  }
  RETURN_IF_ERROR(CheckOut("Linear", "y", y, dev, Shape{x.dim(0), w.dim(0)}));
  RETURN_IF_ERROR(NoOverlap("Linear", "y", *y, {&x, &w}));
  return DoLinear(x, w, y);
}

Status TrainOps::LinearBackwardInput(const Tensor& dy, const Tensor& w, bool accumulate,
                                     Tensor* dx) {
  const Device dev = device();
  RETURN_IF_ERROR(Check2d("LinearBackwardInput", "dy", dy, dev));
  RETURN_IF_ERROR(Check2d("LinearBackwardInput", "w", w, dev));
  if (w.dim(0) != dy.dim(1)) {
    return InvalidArgumentError("LinearBackwardInput: w " + Str(w.shape()) + " does not fit dy " +
                                Str(dy.shape()));
  }
  RETURN_IF_ERROR(CheckOut("LinearBackwardInput", "dx", dx, dev, Shape{dy.dim(0), w.dim(1)}));
  RETURN_IF_ERROR(NoOverlap("LinearBackwardInput", "dx", *dx, {&dy, &w}));
  return DoLinearBackwardInput(dy, w, accumulate, dx);
}

Status TrainOps::LoraDropout(const LoraDims& d, const Tensor& x, Tensor* xd) {
  const Device dev = device();
  RETURN_IF_ERROR(CheckLoraDims("LoraDropout", d));
  RETURN_IF_ERROR(CheckF32("LoraDropout", "x", x, dev, Shape{d.m, d.n_in}));
  RETURN_IF_ERROR(CheckOut("LoraDropout", "xd", xd, dev, Shape{d.m, d.n_in}));
  if (xd->data() != x.data()) RETURN_IF_ERROR(NoOverlap("LoraDropout", "xd", *xd, {&x}));
  return DoLoraDropout(d, x, xd);
}

Status TrainOps::LoraForward(const LoraDims& d, const Tensor& xd, const Tensor& a, const Tensor& b,
                             Tensor* u, Tensor* y) {
  const Device dev = device();
  const char* op = "LoraForward";
  RETURN_IF_ERROR(CheckLoraDims(op, d));
  RETURN_IF_ERROR(CheckF32(op, "xd", xd, dev, Shape{d.m, d.n_in}));
  RETURN_IF_ERROR(CheckF32(op, "a", a, dev, Shape{d.rank, d.n_in}));
  RETURN_IF_ERROR(CheckF32(op, "b", b, dev, Shape{d.n_out, d.rank}));
  RETURN_IF_ERROR(CheckOut(op, "u", u, dev, Shape{d.m, d.rank}));
  RETURN_IF_ERROR(CheckOut(op, "y", y, dev, Shape{d.m, d.n_out}));
  RETURN_IF_ERROR(NoOverlap(op, "u", *u, {&xd, &a, &b, y}));
  RETURN_IF_ERROR(NoOverlap(op, "y", *y, {&xd, &a, &b}));
  return DoLoraForward(d, xd, a, b, u, y);
}

Status TrainOps::LoraBackward(const LoraDims& d, const Tensor& dy, const Tensor& xd,
                              const Tensor& u, const Tensor& a, const Tensor& b, Tensor* da,
                              Tensor* db, Tensor* dx) {
  const Device dev = device();
  const char* op = "LoraBackward";
  RETURN_IF_ERROR(CheckLoraDims(op, d));
  RETURN_IF_ERROR(CheckF32(op, "dy", dy, dev, Shape{d.m, d.n_out}));
  RETURN_IF_ERROR(CheckF32(op, "xd", xd, dev, Shape{d.m, d.n_in}));
  RETURN_IF_ERROR(CheckF32(op, "u", u, dev, Shape{d.m, d.rank}));
  RETURN_IF_ERROR(CheckF32(op, "a", a, dev, Shape{d.rank, d.n_in}));
  RETURN_IF_ERROR(CheckF32(op, "b", b, dev, Shape{d.n_out, d.rank}));
  if (da != nullptr) {
    RETURN_IF_ERROR(CheckOut(op, "da", da, dev, Shape{d.rank, d.n_in}));
    RETURN_IF_ERROR(NoOverlap(op, "da", *da, {&dy, &xd, &u, &a, &b, db, dx}));
  }
  if (db != nullptr) {
    RETURN_IF_ERROR(CheckOut(op, "db", db, dev, Shape{d.n_out, d.rank}));
    RETURN_IF_ERROR(NoOverlap(op, "db", *db, {&dy, &xd, &u, &a, &b, dx}));
  }
  if (dx != nullptr) {
    RETURN_IF_ERROR(CheckOut(op, "dx", dx, dev, Shape{d.m, d.n_in}));
    RETURN_IF_ERROR(NoOverlap(op, "dx", *dx, {&dy, &xd, &u, &a, &b}));
  }
  return DoLoraBackward(d, dy, xd, u, a, b, da, db, dx);
}

Status TrainOps::RmsNormForward(const Tensor& x, const Tensor& w, float eps, Tensor* y) {
  const Device dev = device();
  RETURN_IF_ERROR(Check2d("RmsNormForward", "x", x, dev));
  RETURN_IF_ERROR(CheckF32("RmsNormForward", "w", w, dev, Shape{x.dim(1)}));
  if (!(eps >= 0.0f) || !std::isfinite(eps)) {
    return InvalidArgumentError("RmsNormForward: eps must be finite and >= 0");
  }
  RETURN_IF_ERROR(CheckOut("RmsNormForward", "y", y, dev, x.shape()));
  if (x.dim(1) == 0) return InvalidArgumentError("RmsNormForward: rows of 0 values");
  RETURN_IF_ERROR(NoOverlap("RmsNormForward", "y", *y, {&x, &w}));
  return DoRmsNormForward(x, w, eps, y);
}

Status TrainOps::RmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps,
                                 Tensor* dx, Tensor* dw) {
  const Device dev = device();
  const char* op = "RmsNormBackward";
  RETURN_IF_ERROR(Check2d(op, "x", x, dev));
  if (x.dim(1) == 0) return InvalidArgumentError("RmsNormBackward: rows of 0 values");
  if (w.defined()) RETURN_IF_ERROR(CheckF32(op, "w", w, dev, Shape{x.dim(1)}));
  RETURN_IF_ERROR(CheckF32(op, "dy", dy, dev, x.shape()));
  if (!(eps >= 0.0f) || !std::isfinite(eps)) {
    return InvalidArgumentError("RmsNormBackward: eps must be finite and >= 0");
  }
  RETURN_IF_ERROR(CheckOut(op, "dx", dx, dev, x.shape()));
  RETURN_IF_ERROR(NoOverlap(op, "dx", *dx, {&x, &w, &dy, dw}));
  if (dw != nullptr) {
    RETURN_IF_ERROR(CheckOut(op, "dw", dw, dev, Shape{x.dim(1)}));
    RETURN_IF_ERROR(NoOverlap(op, "dw", *dw, {&x, &w, &dy}));
  }
  return DoRmsNormBackward(x, w, dy, eps, dx, dw);
}

Status TrainOps::RopeBackward(const Tensor& dy, const Tensor& positions, const RopeParams& params,
                              Tensor* dx) {
  const Device dev = device();
  const char* op = "RopeBackward";
  RETURN_IF_ERROR(CheckF32(op, "dy", dy, dev, Shape{}));
  if (dy.ndim() != 3) {
    return InvalidArgumentError("RopeBackward: dy must be [T, n_head, head_dim], got " +
                                Str(dy.shape()));
  }
  RETURN_IF_ERROR(params.Validate());
  if (!positions.defined() || positions.dtype() != DType::kI32 || !positions.is_contiguous() ||
      !(positions.shape() == Shape{dy.dim(0)}) ||
      !(positions.device().is_cpu() || positions.device() == dev)) {
    return InvalidArgumentError("RopeBackward: positions must be packed i32 [" +
                                std::to_string(dy.dim(0)) + "] on the host or " + dev.ToString() +
                                ", got " +
                                (positions.defined() ? positions.DebugString() : "undefined"));
  }
  if (positions.device().is_cpu()) {  // the backward rotates by -position
    const auto* p = positions.data_as<const int32_t>();
    for (int64_t t = 0; t < positions.numel(); ++t) {
      if (p[t] == std::numeric_limits<int32_t>::min()) {
        return InvalidArgumentError("RopeBackward: position INT32_MIN cannot be negated");
      }
    }
  }
  RETURN_IF_ERROR(CheckOut(op, "dx", dx, dev, dy.shape()));
  if (dx->data() != dy.data()) RETURN_IF_ERROR(NoOverlap(op, "dx", *dx, {&dy}));
  return DoRopeBackward(dy, positions, params, dx);
}

Status TrainOps::SwiGluForward(const Tensor& gate, const Tensor& up, Tensor* out) {
  const Device dev = device();
  RETURN_IF_ERROR(CheckF32("SwiGluForward", "gate", gate, dev, Shape{}));
  RETURN_IF_ERROR(CheckF32("SwiGluForward", "up", up, dev, gate.shape()));
  RETURN_IF_ERROR(CheckOut("SwiGluForward", "out", out, dev, gate.shape()));
  RETURN_IF_ERROR(NoOverlap("SwiGluForward", "out", *out, {&gate, &up}));
  return DoSwiGluForward(gate, up, out);
}

Status TrainOps::SwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& dy,
                                Tensor* dgate, Tensor* dup) {
  const Device dev = device();
  const char* op = "SwiGluBackward";
  RETURN_IF_ERROR(CheckF32(op, "gate", gate, dev, Shape{}));
  RETURN_IF_ERROR(CheckF32(op, "up", up, dev, gate.shape()));
  RETURN_IF_ERROR(CheckF32(op, "dy", dy, dev, gate.shape()));
  RETURN_IF_ERROR(CheckOut(op, "dgate", dgate, dev, gate.shape()));
  RETURN_IF_ERROR(CheckOut(op, "dup", dup, dev, gate.shape()));
  RETURN_IF_ERROR(NoOverlap(op, "dgate", *dgate, {&gate, &up, &dy, dup}));
  RETURN_IF_ERROR(NoOverlap(op, "dup", *dup, {&gate, &up, &dy}));
  return DoSwiGluBackward(gate, up, dy, dgate, dup);
}

Status TrainOps::AttentionForward(const AttentionTrainDims& dims, const AttentionTrainTensors& in,
                                  Tensor* out, Tensor* lse) {
  const Device dev = device();
  const char* op = "AttentionForward";
  RETURN_IF_ERROR(CheckAttentionInputs(op, dims, in, dev));
  RETURN_IF_ERROR(CheckOut(op, "out", out, dev, Shape{dims.T, dims.n_head, dims.dv}));
  RETURN_IF_ERROR(CheckOut(op, "lse", lse, dev, Shape{dims.T, dims.n_head}));
  for (Tensor* o : {out, lse}) {
    RETURN_IF_ERROR(NoOverlap(
        op, "an output", *o, {&in.q, &in.k, &in.v, &in.mem_q, &in.mem_k, &in.mem_v, &in.mem_bias}));
  }
  RETURN_IF_ERROR(NoOverlap(op, "out", *out, {lse}));
  return DoAttentionForward(dims, in, out, lse);
}

Status TrainOps::AttentionBackward(const AttentionTrainDims& dims, const AttentionTrainTensors& in,
                                   const Tensor& out, const Tensor& lse, const Tensor& dout,
                                   const AttentionTrainGrads& g) {
  const Device dev = device();
  const char* op = "AttentionBackward";
  RETURN_IF_ERROR(CheckAttentionInputs(op, dims, in, dev));
  RETURN_IF_ERROR(CheckF32(op, "out", out, dev, Shape{dims.T, dims.n_head, dims.dv}));
  RETURN_IF_ERROR(CheckF32(op, "lse", lse, dev, Shape{dims.T, dims.n_head}));
  RETURN_IF_ERROR(CheckF32(op, "dout", dout, dev, Shape{dims.T, dims.n_head, dims.dv}));
  RETURN_IF_ERROR(CheckOut(op, "dq", g.dq, dev, Shape{dims.T, dims.n_head, dims.d}));
  RETURN_IF_ERROR(CheckOut(op, "dk", g.dk, dev, Shape{dims.S, dims.n_head_kv, dims.d}));
  RETURN_IF_ERROR(CheckOut(op, "dv", g.dv, dev, Shape{dims.S, dims.n_head_kv, dims.dv}));
  if (in.mem_q.defined() != (g.dmem_q != nullptr)) {
    return InvalidArgumentError("AttentionBackward: dmem_q must be given exactly when mem_q is");
  }
  if (g.dmem_q != nullptr) {
    RETURN_IF_ERROR(CheckOut(op, "dmem_q", g.dmem_q, dev, Shape{dims.T, dims.n_head, dims.d}));
  }
  if (g.dmem_bias != nullptr) {
    if (!in.mem_bias.defined()) {
      return InvalidArgumentError("AttentionBackward: dmem_bias needs the forward's mem_bias");
    }
    RETURN_IF_ERROR(CheckOut(op, "dmem_bias", g.dmem_bias, dev, Shape{dims.n_head}));
  }
  const Tensor* outs[] = {g.dq, g.dk, g.dv, g.dmem_q, g.dmem_bias};
  for (size_t i = 0; i < std::size(outs); ++i) {
    if (outs[i] == nullptr) continue;
    RETURN_IF_ERROR(NoOverlap(
        op, "a gradient", *outs[i],
        {&in.q, &in.k, &in.v, &in.mem_q, &in.mem_k, &in.mem_v, &in.mem_bias, &out, &lse, &dout}));
    for (size_t j = 0; j < i; ++j) {
      if (outs[j] != nullptr) RETURN_IF_ERROR(NoOverlap(op, "a gradient", *outs[i], {outs[j]}));
    }
  }
  return DoAttentionBackward(dims, in, out, lse, dout, g);
}

StatusOr<CrossEntropyResult> TrainOps::CrossEntropy(const Tensor& h, const Tensor& w,
                                                    std::span<const int32_t> labels,
                                                    const CrossEntropyOptions& options,
                                                    Tensor* dh) {
  const Device dev = device();
  const char* op = "CrossEntropy";
  RETURN_IF_ERROR(Check2d(op, "h", h, dev));
  RETURN_IF_ERROR(Check2d(op, "w", w, dev));
  if (w.dim(1) != h.dim(1) || w.dim(0) < 1) {
    return InvalidArgumentError("CrossEntropy: w " + Str(w.shape()) + " does not fit h " +
                                Str(h.shape()));
  }
  if (static_cast<int64_t>(labels.size()) != h.dim(0)) {
    return InvalidArgumentError("CrossEntropy: " + std::to_string(labels.size()) + " labels for " +
                                std::to_string(h.dim(0)) + " rows");
  }
  if (options.rows_per_block < 1 || options.vocab_block < 1 || !(options.grad_scale >= 0.0f) ||
      !std::isfinite(options.grad_scale)) {
    return InvalidArgumentError(
        "CrossEntropy: block sizes must be >= 1 and grad_scale finite and >= 0");
  }
  const int64_t n_vocab = w.dim(0);
  for (size_t t = 0; t < labels.size(); ++t) {
    if (labels[t] != kIgnoreLabel && (labels[t] < 0 || labels[t] >= n_vocab)) {
      return InvalidArgumentError("CrossEntropy: label " + std::to_string(labels[t]) + " at row " +
                                  std::to_string(t) + " is outside [0, " + std::to_string(n_vocab) +
                                  ")");
    }
  }
  if (dh != nullptr) {
    RETURN_IF_ERROR(CheckOut(op, "dh", dh, dev, h.shape()));
    RETURN_IF_ERROR(NoOverlap(op, "dh", *dh, {&h, &w}));
  }
  return DoCrossEntropy(h, w, labels, options, dh);
}

Status TrainOps::AddInPlace(const Tensor& x, Tensor* y) {
  const Device dev = device();
  RETURN_IF_ERROR(CheckF32("AddInPlace", "x", x, dev, Shape{}));
  RETURN_IF_ERROR(CheckOut("AddInPlace", "y", y, dev, x.shape()));
  if (y->data() != x.data()) RETURN_IF_ERROR(NoOverlap("AddInPlace", "y", *y, {&x}));
  return DoAddInPlace(x, y);
}

Status TrainOps::AdamW(const AdamWOptions& options, int64_t step, float lr, const Tensor& grad,
                       Tensor* param, Tensor* m, Tensor* v) {
  const Device dev = device();
  const char* op = "AdamW";
  RETURN_IF_ERROR(options.Validate());
  if (step < 1) return InvalidArgumentError("AdamW: steps count from 1");
  if (!(lr >= 0.0f) || !std::isfinite(lr)) {
    return InvalidArgumentError("AdamW: learning rate must be finite and >= 0");
  }
  RETURN_IF_ERROR(CheckF32(op, "grad", grad, dev, Shape{}));
  RETURN_IF_ERROR(CheckOut(op, "param", param, dev, grad.shape()));
  RETURN_IF_ERROR(CheckOut(op, "m", m, dev, grad.shape()));
  RETURN_IF_ERROR(CheckOut(op, "v", v, dev, grad.shape()));
  RETURN_IF_ERROR(NoOverlap(op, "param", *param, {&grad, m, v}));
  RETURN_IF_ERROR(NoOverlap(op, "m", *m, {&grad, v}));
  RETURN_IF_ERROR(NoOverlap(op, "v", *v, {&grad}));
  return DoAdamW(options, step, lr, grad, param, m, v);
}

}  // namespace muninn
