// Private to the CPU backend: dot products of one weight row with one activation row, computed on
// the weight's own encoding (never a dequantized copy of the weights).
//
// Each weight dtype pairs with an activation dtype: q4_0/q5_0/q8_0 with q8_0, q4_1/q5_1 with q8_1,
// the K-quants with q8_K (integer products per block, one float multiply-add per block or
// sub-block), and f32/f16/bf16 with plain f32. MatMul converts each activation row once with
// QuantizeRow and then calls the kernel for every (row of w, row of x) pair.
//
// Every family (scalar reference, AVX2, AVX-512) lives in its own file; the AVX ones are compiled
// with their ISA flags and may only be called when the CPU supports that ISA.
#pragma once

#include <cstdint>

#include "muninn/core/cpu_features.h"
#include "muninn/core/dtype.h"

namespace muninn::cpu {

// Returns sum_i w[i] * x[i] over n elements. `w` points at n elements of the weight dtype (blocks
// aligned to 2 bytes, f32 to 4), `x` at n elements of the activation dtype (aligned to 4).
using VecDotFn = float (*)(int64_t n, const void* w, const void* x);

// The activation dtype that the dot kernels of `weight` consume; kCount if `weight` has none.
DType ActivationDType(DType weight);

// The dot kernel for `weight` in the given family, or nullptr when the family has none for it.
VecDotFn ScalarVecDot(DType weight);  // quant_dot.cc (every weight dtype MatMul supports)
VecDotFn Avx2VecDot(DType weight);    // quant_dot_avx2.cc
VecDotFn Avx512VecDot(DType weight);  // quant_dot_avx512.cc
VecDotFn Avx512VnniVecDot(DType weight);  // quant_dot_vnni_avx512.cc (needs VNNI as well)

// The best kernel for `weight` that `isa` allows (AVX-512 machines with VNNI prefer the VNNI
// kernels, and run the AVX2 kernels where no AVX-512 one exists); nullptr when the dtype is not supported at all.
VecDotFn SelectVecDot(DType weight, CpuIsa isa);

// Converts n f16 or bf16 values to f32 with F16C/AVX2 (quant_dot_avx2.cc); `dtype` is kF16 or
// kBF16. Same results as DequantizeRow, which is the portable path.
void Avx2HalfToF32(DType dtype, const uint16_t* src, float* dst, int64_t n);

}  // namespace muninn::cpu
