// Private to the CPU backend: argument checks and row walking shared by the f32 row-wise ops
// (norm.cc, rope.cc, softmax.cc, unary.cc, binary.cc).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string_view>

#include "cpu/cpu_context.h"
#include "muninn/core/status.h"
#include "muninn/core/tensor.h"
#include "muninn/core/thread_pool.h"

namespace muninn::cpu {

// Elements one parallel task should at least cover: below this, waking a worker costs more than
// the work (a few microseconds of streaming).
inline constexpr int64_t kEltwiseGrain = 32768;

// Rows for one task when each row has `cols` elements.
inline int64_t RowsPerTask(int64_t cols) {
  return cols <= 0 ? kEltwiseGrain : (kEltwiseGrain + cols - 1) / cols;
}

// OK when `t` is a defined f32 host tensor with at least one dim, packed rows (innermost stride
// 4 bytes, or at most one element per row) and float-aligned data and strides.
Status CheckF32Rows(const Tensor& t, std::string_view op, std::string_view name);

// OK when `out` is non-null, passes CheckF32Rows and has x's shape.
Status CheckOutput(const Tensor& x, const Tensor* out, std::string_view op);

// OK when `t` is undefined (optional absent) or a packed f32 host vector [n].
Status CheckOptionalVector(const Tensor& t, int64_t n, std::string_view op, std::string_view name);

// OK unless `in` and `out` share bytes without being the very same view (same first element,
// shape and strides): element-wise ops support exact in-place aliasing, nothing else.
Status CheckAliasing(const Tensor& in, const Tensor& out, std::string_view op,
                     std::string_view name);

// The rows of a checked f32 tensor: every dim but the last, flattened in row-major order.
class F32Rows {
 public:
  explicit F32Rows(const Tensor& t);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  float* row(int64_t r) const {
    char* p = base_;
    for (int k = n_outer_ - 1; k >= 0; --k) {
      const int64_t d = dims_[static_cast<size_t>(k)];
      p += (r % d) * strides_[static_cast<size_t>(k)];
      r /= d;
    }
    return reinterpret_cast<float*>(p);
  }

 private:
  char* base_;
  int64_t rows_;
  int64_t cols_;
  int n_outer_;
  std::array<int64_t, kMaxDims> dims_{};     // outer dims
  std::array<int64_t, kMaxDims> strides_{};  // their byte strides
};

// Runs fn(a, b, y, n) over every row of `out`, split over the pool. `b` may be null (unary ops;
// fn then gets nullptr) or a single row broadcast to every row (b_broadcast). When every operand
// is contiguous and nothing is broadcast, the tensor is one long span cut in even chunks.
template <class Fn>
void ForEachSpan(const CpuContext& ctx, const Tensor& a, const Tensor* b, bool b_broadcast,
                 const Tensor& out, Fn fn) {
  const bool flat = a.is_contiguous() && out.is_contiguous() &&
                    (b == nullptr || (!b_broadcast && b->is_contiguous()));
  if (flat) {
    constexpr int64_t kBlock = 4096;  // floats per span: keeps chunk starts vector-aligned
    const int64_t n = out.numel();
    const float* pa = a.data_as<const float>();
    const float* pb = b ? b->data_as<const float>() : nullptr;
    float* py = out.data_as<float>();
    ParallelFor(ctx.pool, (n + kBlock - 1) / kBlock, kEltwiseGrain / kBlock,
                [&](int64_t begin, int64_t end) {
                  const int64_t lo = begin * kBlock;
                  const int64_t hi = std::min(n, end * kBlock);
                  fn(pa + lo, pb ? pb + lo : nullptr, py + lo, hi - lo);
                });
    return;
  }
  const F32Rows ra(a), ry(out);
  const F32Rows rb = b ? F32Rows(*b) : F32Rows(a);
  const float* b_row = (b && b_broadcast) ? rb.row(0) : nullptr;
  ParallelFor(ctx.pool, ry.rows(), RowsPerTask(ry.cols()), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* pb = b == nullptr ? nullptr : (b_broadcast ? b_row : rb.row(r));
      fn(ra.row(r), pb, ry.row(r), ry.cols());
    }
  });
}

}  // namespace muninn::cpu
