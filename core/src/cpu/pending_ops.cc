// TEMPORARY during the foundation work: ops whose kernels are not written yet. Each kernel file
// removes its entries from here as it lands; this file is deleted when it is empty.
#include "cpu/cpu_ops.h"

namespace muninn::cpu {

Status RmsNormOp(const CpuContext&, const Tensor&, const Tensor&, float, Tensor*) { return UnimplementedError("RmsNorm"); }
Status LayerNormOp(const CpuContext&, const Tensor&, const Tensor&, const Tensor&, float, Tensor*) { return UnimplementedError("LayerNorm"); }
Status RopeOp(const CpuContext&, const Tensor&, const Tensor&, const RopeParams&, Tensor*) { return UnimplementedError("Rope"); }
Status SoftmaxOp(const CpuContext&, const Tensor&, float, Tensor*) { return UnimplementedError("Softmax"); }
Status SiluOp(const CpuContext&, const Tensor&, Tensor*) { return UnimplementedError("Silu"); }
Status GeluOp(const CpuContext&, const Tensor&, GeluMode, Tensor*) { return UnimplementedError("Gelu"); }
Status SwiGluOp(const CpuContext&, const Tensor&, const Tensor&, Tensor*) { return UnimplementedError("SwiGlu"); }
Status AddOp(const CpuContext&, const Tensor&, const Tensor&, Tensor*) { return UnimplementedError("Add"); }
Status MulOp(const CpuContext&, const Tensor&, const Tensor&, Tensor*) { return UnimplementedError("Mul"); }
Status ScaleOp(const CpuContext&, const Tensor&, float, Tensor*) { return UnimplementedError("Scale"); }

}  // namespace muninn::cpu
