// Element-wise unary ops on the CPU: SiLU, GELU (erf and tanh forms) and Scale.
#include <cmath>
#include <string>

#include "cpu/cpu_ops.h"
#include "cpu/eltwise_kernels.h"
#include "cpu/eltwise_util.h"

namespace muninn::cpu {
namespace {

using UnaryRow = void (*)(const float* x, float* y, int64_t n);

Status CheckUnary(const Tensor& x, const Tensor* out, std::string_view op) {
  RETURN_IF_ERROR(CheckF32Rows(x, op, "x"));
  RETURN_IF_ERROR(CheckOutput(x, out, op));
  return CheckAliasing(x, *out, op, "x");
}

Status RunUnary(const CpuContext& ctx, const Tensor& x, Tensor* out, std::string_view op,
                UnaryRow kernel) {
  RETURN_IF_ERROR(CheckUnary(x, out, op));
  if (x.numel() == 0) return Status::Ok();
  ForEachSpan(ctx, x, nullptr, false, *out,
              [kernel](const float* a, const float*, float* y, int64_t n) { kernel(a, y, n); });
  return Status::Ok();
}

}  // namespace

Status SiluOp(const CpuContext& ctx, const Tensor& x, Tensor* out) {
  return RunUnary(ctx, x, out, "Silu", EltwiseKernelsFor(ctx.isa).silu);
}

Status GeluOp(const CpuContext& ctx, const Tensor& x, GeluMode mode, Tensor* out) {
  const EltwiseKernels& k = EltwiseKernelsFor(ctx.isa);
  switch (mode) {
    case GeluMode::kErf:
      return RunUnary(ctx, x, out, "Gelu", k.gelu_erf);
    case GeluMode::kTanh:
      return RunUnary(ctx, x, out, "Gelu", k.gelu_tanh);
  }
  return InvalidArgumentError("Gelu: unknown mode " + std::to_string(static_cast<int>(mode)));
}

Status ScaleOp(const CpuContext& ctx, const Tensor& x, float s, Tensor* out) {
  RETURN_IF_ERROR(CheckUnary(x, out, "Scale"));
  if (x.numel() == 0) return Status::Ok();
  const auto kernel = EltwiseKernelsFor(ctx.isa).scale;
  ForEachSpan(
      ctx, x, nullptr, false, *out,
      [kernel, s](const float* a, const float*, float* y, int64_t n) { kernel(a, s, y, n); });
  return Status::Ok();
}

}  // namespace muninn::cpu
