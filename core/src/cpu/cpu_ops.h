// Private to the CPU backend: the op entry points CpuBackend forwards to. Each validates its
// arguments (dtype, shape, device, aliasing) and returns InvalidArgument before writing anything,
// then runs the kernel family ctx.isa selects. Semantics are documented on Backend (backend.h).
#pragma once

#include <memory>

#include "muninn/core/backend.h"
#include "muninn/core/train_ops.h"
#include "cpu/cpu_context.h"

namespace muninn::cpu {

Status CopyOp(const CpuContext& ctx, const Tensor& src, Tensor* dst);                 // copy.cc
Status MatMulOp(const CpuContext& ctx, const Tensor& x, const Tensor& w, Tensor* out);  // matmul.cc
// outs[i] = x · ws[i]ᵀ; the caller has run CheckMatMulSharedArgs. matmul.cc
Status MatMulSharedOp(const CpuContext& ctx, const Tensor& x, std::span<const Tensor* const> ws,
                      std::span<Tensor* const> outs);
Status GetRowsOp(const CpuContext& ctx, const Tensor& table, const Tensor& ids, Tensor* out);  // get_rows.cc
Status RmsNormOp(const CpuContext& ctx, const Tensor& x, const Tensor& weight, float eps, Tensor* out);  // norm.cc
Status LayerNormOp(const CpuContext& ctx, const Tensor& x, const Tensor& weight, const Tensor& bias,
                   float eps, Tensor* out);                                              // norm.cc
Status RopeOp(const CpuContext& ctx, const Tensor& x, const Tensor& positions, const RopeParams& p,
              Tensor* out);                                                              // rope.cc
Status SoftmaxOp(const CpuContext& ctx, const Tensor& x, float scale, Tensor* out);     // softmax.cc
Status SiluOp(const CpuContext& ctx, const Tensor& x, Tensor* out);                     // unary.cc
Status GeluOp(const CpuContext& ctx, const Tensor& x, GeluMode mode, Tensor* out);      // unary.cc
Status SwiGluOp(const CpuContext& ctx, const Tensor& gate, const Tensor& up, Tensor* out);  // binary.cc
Status AddOp(const CpuContext& ctx, const Tensor& a, const Tensor& b, Tensor* out);     // binary.cc
Status MulOp(const CpuContext& ctx, const Tensor& a, const Tensor& b, Tensor* out);     // binary.cc
Status ScaleOp(const CpuContext& ctx, const Tensor& x, float s, Tensor* out);           // unary.cc
Status AttentionOp(const CpuContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                   const Tensor& mem_k, const Tensor& mem_v, const AttentionParams& p,
                   Tensor* out);                                                         // attention.cc

// The host kernels of train_ops.h on host tensors; pool may be null.            // train_ops_cpu.cc
std::unique_ptr<TrainOps> MakeCpuTrainOps(ThreadPool* pool);

// Which dtypes each op accepts for its main operand (see OpDesc).
bool CpuSupportsOp(const OpDesc& op);                                                    // cpu_backend.cc

}  // namespace muninn::cpu
