// RmsNorm and LayerNorm on the CPU: one row kernel call per row, rows split over the pool.
#include <cmath>
#include <string>

#include "cpu/cpu_ops.h"
#include "cpu/eltwise_kernels.h"
#include "cpu/eltwise_util.h"

namespace muninn::cpu {
namespace {

Status CheckEps(float eps, std::string_view op) {
  if (!std::isfinite(eps) || eps < 0.0f) {
    return InvalidArgumentError(std::string(op) + ": eps must be finite and >= 0, got " +
                                std::to_string(eps));
  }
  return Status::Ok();
}

}  // namespace

Status RmsNormOp(const CpuContext& ctx, const Tensor& x, const Tensor& weight, float eps,
                 Tensor* out) {
  RETURN_IF_ERROR(CheckF32Rows(x, "RmsNorm", "x"));
  RETURN_IF_ERROR(CheckOutput(x, out, "RmsNorm"));
  const int64_t d = x.dim(-1);
  RETURN_IF_ERROR(CheckOptionalVector(weight, d, "RmsNorm", "weight"));
  RETURN_IF_ERROR(CheckEps(eps, "RmsNorm"));
  RETURN_IF_ERROR(CheckAliasing(x, *out, "RmsNorm", "x"));
  if (weight.defined()) RETURN_IF_ERROR(CheckAliasing(weight, *out, "RmsNorm", "weight"));
  if (x.numel() == 0) return Status::Ok();

  const EltwiseKernels& k = EltwiseKernelsFor(ctx.isa);
  const float* w = weight.defined() ? weight.data_as<const float>() : nullptr;
  const F32Rows xr(x), yr(*out);
  ParallelFor(ctx.pool, xr.rows(), RowsPerTask(d), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) k.rms_norm(xr.row(r), w, eps, yr.row(r), d);
  });
  return Status::Ok();
}

Status LayerNormOp(const CpuContext& ctx, const Tensor& x, const Tensor& weight, const Tensor& bias,
                   float eps, Tensor* out) {
  RETURN_IF_ERROR(CheckF32Rows(x, "LayerNorm", "x"));
  RETURN_IF_ERROR(CheckOutput(x, out, "LayerNorm"));
  const int64_t d = x.dim(-1);
  RETURN_IF_ERROR(CheckOptionalVector(weight, d, "LayerNorm", "weight"));
  RETURN_IF_ERROR(CheckOptionalVector(bias, d, "LayerNorm", "bias"));
  RETURN_IF_ERROR(CheckEps(eps, "LayerNorm"));
  RETURN_IF_ERROR(CheckAliasing(x, *out, "LayerNorm", "x"));
  if (weight.defined()) RETURN_IF_ERROR(CheckAliasing(weight, *out, "LayerNorm", "weight"));
  if (bias.defined()) RETURN_IF_ERROR(CheckAliasing(bias, *out, "LayerNorm", "bias"));
  if (x.numel() == 0) return Status::Ok();

  const EltwiseKernels& k = EltwiseKernelsFor(ctx.isa);
  const float* w = weight.defined() ? weight.data_as<const float>() : nullptr;
  const float* b = bias.defined() ? bias.data_as<const float>() : nullptr;
  const F32Rows xr(x), yr(*out);
  ParallelFor(ctx.pool, xr.rows(), RowsPerTask(d), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) k.layer_norm(xr.row(r), w, b, eps, yr.row(r), d);
  });
  return Status::Ok();
}

}  // namespace muninn::cpu
