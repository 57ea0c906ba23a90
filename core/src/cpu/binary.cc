// Element-wise binary ops on the CPU: Add, Mul (b same shape as a, or one row broadcast over a's
// rows) and SwiGlu (gate and up of the same shape).
#include <string>

#include "cpu/cpu_ops.h"
#include "cpu/eltwise_kernels.h"
#include "cpu/eltwise_util.h"

namespace muninn::cpu {
namespace {

using BinaryRow = void (*)(const float* a, const float* b, float* y, int64_t n);

// Checks a/b/out for Add and Mul; sets *broadcast when b is a single row [D] (or [1, .., D]) to
// be applied to every row of a.
Status CheckBroadcastBinary(const Tensor& a, const Tensor& b, const Tensor* out,
                            std::string_view op, bool* broadcast) {
  RETURN_IF_ERROR(CheckF32Rows(a, op, "a"));
  RETURN_IF_ERROR(CheckF32Rows(b, op, "b"));
  RETURN_IF_ERROR(CheckOutput(a, out, op));
  if (b.shape() == a.shape()) {
    *broadcast = false;
  } else if (b.num_rows() == 1 && b.dim(-1) == a.dim(-1) && b.ndim() <= a.ndim()) {
    *broadcast = true;
  } else {
    return InvalidArgumentError(std::string(op) + ": b must have a's shape " +
                                a.shape().ToString() + " or be one row [" +
                                std::to_string(a.dim(-1)) + "], got " + b.shape().ToString());
  }
  RETURN_IF_ERROR(CheckAliasing(a, *out, op, "a"));
  return CheckAliasing(b, *out, op, "b");
}

Status RunBroadcastBinary(const CpuContext& ctx, const Tensor& a, const Tensor& b, Tensor* out,
                          std::string_view op, BinaryRow kernel) {
  bool broadcast = false;
  RETURN_IF_ERROR(CheckBroadcastBinary(a, b, out, op, &broadcast));
  if (a.numel() == 0) return Status::Ok();
  ForEachSpan(ctx, a, &b, broadcast, *out, kernel);
  return Status::Ok();
}

}  // namespace

Status AddOp(const CpuContext& ctx, const Tensor& a, const Tensor& b, Tensor* out) {
  return RunBroadcastBinary(ctx, a, b, out, "Add", EltwiseKernelsFor(ctx.isa).add);
}

Status MulOp(const CpuContext& ctx, const Tensor& a, const Tensor& b, Tensor* out) {
  return RunBroadcastBinary(ctx, a, b, out, "Mul", EltwiseKernelsFor(ctx.isa).mul);
}

Status SwiGluOp(const CpuContext& ctx, const Tensor& gate, const Tensor& up, Tensor* out) {
  RETURN_IF_ERROR(CheckF32Rows(gate, "SwiGlu", "gate"));
  RETURN_IF_ERROR(CheckF32Rows(up, "SwiGlu", "up"));
  RETURN_IF_ERROR(CheckOutput(gate, out, "SwiGlu"));
  if (!(up.shape() == gate.shape())) {
    return InvalidArgumentError("SwiGlu: up has shape " + up.shape().ToString() + " but gate has " +
                                gate.shape().ToString());
  }
  RETURN_IF_ERROR(CheckAliasing(gate, *out, "SwiGlu", "gate"));
  RETURN_IF_ERROR(CheckAliasing(up, *out, "SwiGlu", "up"));
  if (gate.numel() == 0) return Status::Ok();
  ForEachSpan(ctx, gate, &up, false, *out, EltwiseKernelsFor(ctx.isa).swiglu);
  return Status::Ok();
}

}  // namespace muninn::cpu
