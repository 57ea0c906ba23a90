// Private to the CPU backend: the row kernels behind RmsNorm, LayerNorm, Rope, Softmax, the
// activations and the element-wise ops, one table per kernel family (scalar reference, AVX2/FMA,
// AVX-512). The op entry points (norm.cc, rope.cc, softmax.cc, unary.cc, binary.cc) validate
// tensors, walk rows and split them over the thread pool; the kernels only see packed spans.
//
// Every kernel works on n >= 0 packed floats. An output pointer may equal an input pointer (in
// place); any other overlap between an output and an input is not allowed. Kernels are pure
// functions of their arguments and may run concurrently on disjoint outputs.
#pragma once

#include <cstdint>

#include "muninn/core/cpu_features.h"

namespace muninn::cpu {

struct EltwiseKernels {
  // y[n] = x * r * w with r = 1 / sqrt(mean(x²) + eps); w[n] may be null (= 1).
  void (*rms_norm)(const float* x, const float* w, float eps, float* y, int64_t n);
  // y[n] = (x - mean) / sqrt(var + eps) * w + b (biased variance); w, b may be null.
  void (*layer_norm)(const float* x, const float* w, const float* b, float eps, float* y,
                     int64_t n);
  // y[n] = softmax(x * scale). A row whose every entry is -inf (fully masked) becomes all 0.
  void (*softmax)(const float* x, float scale, float* y, int64_t n);
  void (*silu)(const float* x, float* y, int64_t n);       // x * sigmoid(x)
  void (*gelu_erf)(const float* x, float* y, int64_t n);   // x/2 * (1 + erf(x / sqrt 2))
  void (*gelu_tanh)(const float* x, float* y, int64_t n);  // x/2 * (1 + tanh(c (x + 0.044715x³)))
  void (*swiglu)(const float* g, const float* u, float* y, int64_t n);  // silu(g) * u
  void (*add)(const float* a, const float* b, float* y, int64_t n);
  void (*mul)(const float* a, const float* b, float* y, int64_t n);
  void (*scale)(const float* x, float s, float* y, int64_t n);
  // RoPE over the n_head heads of one token. Head h starts at x + h * x_head_stride (floats) and
  // y + h * y_head_stride. Only the first rotated dims are written; the caller copies the rest.
  //  halves: pair i = (x[i], x[i + half]), i < half, angle tables cos[half], sin[half]:
  //          y[i] = x[i] c - x[i+half] s,  y[i+half] = x[i+half] c + x[i] s.
  //  interleaved: pair i = (x[2i], x[2i+1]), tables of n_rot entries laid out per element:
  //          cos2 = (c0, c0, c1, c1, ...), sin2 = (-s0, +s0, -s1, +s1, ...), so that
  //          y = x * cos2 + swap_pairs(x) * sin2.
  void (*rope_halves)(const float* x, int64_t x_head_stride, float* y, int64_t y_head_stride,
                      int64_t n_head, const float* cos, const float* sin, int64_t half);
  void (*rope_interleaved)(const float* x, int64_t x_head_stride, float* y, int64_t y_head_stride,
                           int64_t n_head, const float* cos2, const float* sin2, int64_t n_rot);
};

const EltwiseKernels& ScalarEltwiseKernels();  // eltwise_scalar.cc
const EltwiseKernels& Avx2EltwiseKernels();    // eltwise_avx2.cc: needs AVX2 + FMA
const EltwiseKernels& Avx512EltwiseKernels();  // eltwise_avx512.cc: needs AVX-512 F/BW/VL/DQ

// The table for a kernel family; the caller guarantees the CPU supports `isa`
// (CpuBackendOptions::Validate does).
const EltwiseKernels& EltwiseKernelsFor(CpuIsa isa);

}  // namespace muninn::cpu
