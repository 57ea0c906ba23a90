// Private to the CUDA backend: the argument checks of its ops (the CUDA counterparts of
// core/src/cpu/eltwise_util.h and view_checks.h: same rules, device tensors instead of host ones).
#pragma once

#include <string_view>

#include "cuda/kernels.h"
#include "muninn/core/status.h"
#include "muninn/core/tensor.h"

namespace muninn::cuda {

// OK when `t` is defined, lives on CUDA device `device` and has 1 to 4 dims.
Status CheckOnDevice(const Tensor& t, int device, std::string_view op, std::string_view name);
// CheckOnDevice plus: f32, packed rows (innermost stride 4 or one element per row), float-aligned
// data and strides.
Status CheckF32Rows(const Tensor& t, int device, std::string_view op, std::string_view name);
// OK when `out` is non-null, passes CheckF32Rows and has x's shape.
Status CheckOutput(const Tensor& x, const Tensor* out, int device, std::string_view op);
// OK when `t` is undefined or a packed f32 device vector [n].
Status CheckOptionalVector(const Tensor& t, int64_t n, int device, std::string_view op,
                           std::string_view name);
// OK unless `in` and `out` share bytes without being the very same view.
Status CheckAliasing(const Tensor& in, const Tensor& out, std::string_view op,
                     std::string_view name);
// OK when a norm's eps is finite and >= 0.
Status CheckEps(float eps, std::string_view op);
// True when two non-empty views share a byte.
bool Overlaps(const Tensor& a, const Tensor& b);
// The rows of a tensor with packed rows (checked by the caller): dims and strides of all dims but
// the innermost.
RowLayout LayoutOf(const Tensor& t);
// Whether every row start of `t` is a multiple of `align` bytes.
bool RowsAligned(const Tensor& t, size_t align);

}  // namespace muninn::cuda
