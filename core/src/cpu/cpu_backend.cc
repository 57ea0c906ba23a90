#include "muninn/core/cpu_backend.h"

#include <cstring>

#include "cpu/cpu_ops.h"

namespace muninn {

Status CpuBackendOptions::Validate() const {
  const CpuIsa best = GetCpuFeatures().BestIsa();
  if (static_cast<int>(isa) > static_cast<int>(best)) {
    return InvalidArgumentError(std::string("CPU kernels '") + CpuIsaName(isa) +
                                "' requested but this CPU supports at most '" + CpuIsaName(best) + "'");
  }
  return Status::Ok();
}

namespace cpu {

bool CpuSupportsOp(const OpDesc& op) {
  switch (op.kind) {
    case OpKind::kMatMul:
    case OpKind::kGetRows:
      switch (op.dtype) {
        case DType::kF32: case DType::kF16: case DType::kBF16:
        case DType::kQ4_0: case DType::kQ4_1: case DType::kQ5_0: case DType::kQ5_1:
        case DType::kQ8_0: case DType::kQ4_K: case DType::kQ5_K: case DType::kQ6_K:
          return true;
        default:
          return false;
      }
    case OpKind::kCopy:
      switch (op.dtype) {
        case DType::kF32: case DType::kF16: case DType::kBF16:
        case DType::kQ8_0: case DType::kQ4_0: case DType::kQ4_1: case DType::kQ5_0:
        case DType::kQ5_1: case DType::kQ8_1: case DType::kQ8_K:
          return true;
        default:
          return false;
      }
    case OpKind::kAttention:  // the K/V dtype
      return op.dtype == DType::kF32 || op.dtype == DType::kF16 || op.dtype == DType::kQ8_0;
    default:
      return op.dtype == DType::kF32;
  }
}

namespace {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const CpuBackendOptions& o) : ctx_{o.pool, o.isa, o.exact_matmul,
             o.int8_gemm && o.isa == CpuIsa::kAvx512 && GetCpuFeatures().avx512vnni} {}

  std::string name() const override {
    return std::string("cpu-") + CpuIsaName(ctx_.isa) + (ctx_.exact_matmul ? "-exact" : "");
  }
  Device device() const override { return Device::Cpu(); }
  StatusOr<Tensor> Allocate(DType dtype, const Shape& shape) override {
    return Tensor::Empty(dtype, shape);
  }
  Status Transfer(const Tensor& src, Tensor* dst) override {
    RETURN_IF_ERROR(CheckTransferArgs(*this, src, dst));  // here: host to host
    return cpu::CopyOp(ctx_, src, dst);
  }
  bool SupportsOp(const OpDesc& op) const override { return CpuSupportsOp(op); }
  Status Synchronize() override { return Status::Ok(); }

  Status Copy(const Tensor& src, Tensor* dst) override { return CopyOp(ctx_, src, dst); }
  Status MatMul(const Tensor& x, const Tensor& w, Tensor* out) override {
    return MatMulOp(ctx_, x, w, out);
  }
  Status MatMulShared(const Tensor& x, std::span<const Tensor* const> ws,
                      std::span<Tensor* const> outs) override {
    RETURN_IF_ERROR(CheckMatMulSharedArgs(*this, x, ws, outs));
    return MatMulSharedOp(ctx_, x, ws, outs);
  }
  Status GetRows(const Tensor& t, const Tensor& ids, Tensor* out) override {
    return GetRowsOp(ctx_, t, ids, out);
  }
  Status RmsNorm(const Tensor& x, const Tensor& w, float eps, Tensor* out) override {
    return RmsNormOp(ctx_, x, w, eps, out);
  }
  Status LayerNorm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor* out) override {
    return LayerNormOp(ctx_, x, w, b, eps, out);
  }
  Status Rope(const Tensor& x, const Tensor& pos, const RopeParams& p, Tensor* out) override {
    return RopeOp(ctx_, x, pos, p, out);
  }
  Status Softmax(const Tensor& x, float scale, Tensor* out) override {
    return SoftmaxOp(ctx_, x, scale, out);
  }
  Status Silu(const Tensor& x, Tensor* out) override { return SiluOp(ctx_, x, out); }
  Status Gelu(const Tensor& x, GeluMode m, Tensor* out) override { return GeluOp(ctx_, x, m, out); }
  Status SwiGlu(const Tensor& g, const Tensor& u, Tensor* out) override {
    return SwiGluOp(ctx_, g, u, out);
  }
  Status Add(const Tensor& a, const Tensor& b, Tensor* out) override { return AddOp(ctx_, a, b, out); }
  Status Mul(const Tensor& a, const Tensor& b, Tensor* out) override { return MulOp(ctx_, a, b, out); }
  Status Scale(const Tensor& x, float s, Tensor* out) override { return ScaleOp(ctx_, x, s, out); }
  Status Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mk,
                   const Tensor& mv, const AttentionParams& p, Tensor* out) override {
    return AttentionOp(ctx_, q, k, v, mk, mv, p, out);
  }
  StatusOr<std::unique_ptr<TrainOps>> CreateTrainOps(ThreadPool* pool) override {
    return MakeCpuTrainOps(pool != nullptr ? pool : ctx_.pool);
  }

 private:
  CpuContext ctx_;
};

}  // namespace
}  // namespace cpu

StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(const CpuBackendOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  return std::unique_ptr<Backend>(std::make_unique<cpu::CpuBackend>(options));
}

}  // namespace muninn
