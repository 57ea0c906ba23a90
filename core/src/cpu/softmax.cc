// Row-wise softmax on the CPU (numerically stable: the row maximum is subtracted first).
#include <cmath>
#include <string>

#include "cpu/cpu_ops.h"
#include "cpu/eltwise_kernels.h"
#include "cpu/eltwise_util.h"

namespace muninn::cpu {

Status SoftmaxOp(const CpuContext& ctx, const Tensor& x, float scale, Tensor* out) {
  RETURN_IF_ERROR(CheckF32Rows(x, "Softmax", "x"));
  RETURN_IF_ERROR(CheckOutput(x, out, "Softmax"));
  if (!std::isfinite(scale)) {
    return InvalidArgumentError("Softmax: scale must be finite, got " + std::to_string(scale));
  }
  RETURN_IF_ERROR(CheckAliasing(x, *out, "Softmax", "x"));
  if (x.numel() == 0) return Status::Ok();

  const EltwiseKernels& k = EltwiseKernelsFor(ctx.isa);
  const int64_t d = x.dim(-1);
  const F32Rows xr(x), yr(*out);
  ParallelFor(ctx.pool, xr.rows(), RowsPerTask(d), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) k.softmax(xr.row(r), scale, yr.row(r), d);
  });
  return Status::Ok();
}

}  // namespace muninn::cpu
