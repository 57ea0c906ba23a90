// Copy on the CPU: dst = src converted to dst's dtype, any strides (innermost dims of block
// formats are packed by construction). Same-dtype copies move bytes for every dtype; conversions
// go through f32 one row at a time: any dtype DequantizeRow reads -> any dtype QuantizeRow writes.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cpu/view_checks.h"
#include "muninn/core/quant.h"

namespace muninn::cpu {
namespace {

// Byte offset of row r (rows numbered row-major over all dims but the last).
int64_t RowOffset(const Tensor& t, int64_t r) {
  int64_t off = 0;
  for (int i = t.ndim() - 2; i >= 0; --i) {
    const int64_t d = t.dim(i);
    off += (r % d) * t.stride(i);
    r /= d;
  }
  return off;
}

// Whether the innermost dimension's elements (or blocks) are adjacent.
bool InnerPacked(const Tensor& t) {
  return t.ndim() == 0 || t.dim(-1) <= 1 ||
         t.stride(-1) == static_cast<int64_t>(GetDTypeInfo(t.dtype()).block_bytes);
}

Status Validate(const Tensor& src, const Tensor& dst) {
  if (!src.defined() || !dst.defined()) return InvalidArgumentError("Copy: undefined tensor");
  if (!src.device().is_cpu() || !dst.device().is_cpu()) {
    return InvalidArgumentError("Copy on the CPU backend needs host tensors; got src on " +
                                src.device().ToString() + ", dst on " + dst.device().ToString());
  }
  if (!(src.shape() == dst.shape())) {
    return InvalidArgumentError("Copy: shapes differ, src " + src.shape().ToString() + " vs dst " +
                                dst.shape().ToString());
  }
  if (src.dtype() != dst.dtype()) {
    if (!CanDequantize(src.dtype()) || !CanQuantize(dst.dtype())) {
      return InvalidArgumentError(
          "Copy: no conversion from " + std::string(DTypeName(src.dtype())) + " to " +
          std::string(DTypeName(dst.dtype())) +
          "; sources: f32, f16, bf16 and every block format; "
          "destinations: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q8_1, q8_K");
    }
    if (src.ndim() == 0) return InvalidArgumentError("Copy: converting a 0-d tensor");
  }
  for (int i = 0; i < dst.ndim(); ++i) {
    if (dst.dim(i) > 1 && dst.stride(i) == 0) {
      return InvalidArgumentError("Copy: dst " + dst.DebugString() +
                                  " repeats elements (stride 0)");
    }
  }
  if (Overlaps(src, dst) && !SameView(src, dst)) {
    return InvalidArgumentError("Copy: src and dst overlap; copy through a temporary");
  }
  return Status::Ok();
}

}  // namespace

Status CopyOp(const CpuContext& ctx, const Tensor& src, Tensor* dst) {
  if (dst == nullptr) return InvalidArgumentError("Copy: dst is null");
  RETURN_IF_ERROR(Validate(src, *dst));
  if (src.numel() == 0 || SameView(src, *dst)) return Status::Ok();
  const auto* sbase = static_cast<const char*>(src.data());
  auto* dbase = static_cast<char*>(dst->data());
  if (src.ndim() == 0) {
    std::memcpy(dbase, sbase, GetDTypeInfo(src.dtype()).block_bytes);
    return Status::Ok();
  }
  const int64_t rows = src.num_rows();
  const int64_t n = src.dim(-1);
  const bool same = src.dtype() == dst->dtype();
  const bool s_packed = InnerPacked(src), d_packed = InnerPacked(*dst);
  const size_t s_elem = GetDTypeInfo(src.dtype()).block_bytes;  // plain dtypes when not packed
  const size_t d_elem = GetDTypeInfo(dst->dtype()).block_bytes;
  const size_t s_row = *RowBytes(src.dtype(), n), d_row = *RowBytes(dst->dtype(), n);
  const int64_t s_inner = src.stride(-1), d_inner = dst->stride(-1);
  const int64_t min_chunk =
      std::max<int64_t>(1, (64 << 10) / static_cast<int64_t>(s_row + d_row + 1));

  ParallelFor(ctx.pool, rows, min_chunk, [&](int64_t begin, int64_t end) {
    // Per-thread row buffers: the packed source row, the f32 row, the packed destination row.
    std::vector<char> s_tmp(s_packed ? 0 : s_row), d_tmp(d_packed ? 0 : d_row);
    std::vector<float> f(same ? 0 : static_cast<size_t>(n));
    for (int64_t r = begin; r < end; ++r) {
      const char* s = sbase + RowOffset(src, r);
      char* d = dbase + RowOffset(*dst, r);
      if (!s_packed) {
        for (int64_t j = 0; j < n; ++j) std::memcpy(&s_tmp[j * s_elem], s + j * s_inner, s_elem);
        s = s_tmp.data();
      }
      char* out = d_packed ? d : d_tmp.data();
      if (same) {
        std::memcpy(out, s, s_row);
      } else {
        DequantizeRow(src.dtype(), s, f.data(), n);
        // Cannot fail: the dtype and n were validated.
        QuantizeRow(dst->dtype(), f.data(), out, n).IgnoreError();
      }
      if (!d_packed) {
        for (int64_t j = 0; j < n; ++j) std::memcpy(d + j * d_inner, &d_tmp[j * d_elem], d_elem);
      }
    }
  });
  return Status::Ok();
}

}  // namespace muninn::cpu
