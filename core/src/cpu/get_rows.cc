// GetRows on the CPU (embedding lookup): out[t, :] = table[ids[t], :] as f32, for every dtype
// DequantizeRow reads. All ids are checked before anything is written.
#include <algorithm>
#include <cstring>
#include <string>

#include "cpu/cpu_ops.h"
#include "cpu/view_checks.h"
#include "muninn/core/quant.h"

namespace muninn::cpu {
namespace {

int64_t IdAt(const Tensor& ids, int64_t t) {
  const char* p = static_cast<const char*>(ids.data()) + t * ids.stride(0);
  if (ids.dtype() == DType::kI32) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  int64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

Status Validate(const Tensor& table, const Tensor& ids, const Tensor& out) {
  if (!table.defined() || !ids.defined() || !out.defined()) {
    return InvalidArgumentError("GetRows: table, ids and out must all be defined tensors");
  }
  if (!table.device().is_cpu() || !ids.device().is_cpu() || !out.device().is_cpu()) {
    return InvalidArgumentError("GetRows on the CPU backend needs host tensors");
  }
  if (!CanDequantize(table.dtype()) || table.dtype() == DType::kQ8_1 ||
      table.dtype() == DType::kQ8_K) {
    return InvalidArgumentError("GetRows: table dtype " + std::string(DTypeName(table.dtype())) +
                                " is not supported (f32, f16, bf16 or a GGUF weight format)");
  }
  if (ids.dtype() != DType::kI32 && ids.dtype() != DType::kI64) {
    return InvalidArgumentError("GetRows: ids must be i32 (or i64), got " +
                                std::string(DTypeName(ids.dtype())));
  }
  if (out.dtype() != DType::kF32) {
    return InvalidArgumentError("GetRows: out must be f32, got " +
                                std::string(DTypeName(out.dtype())));
  }
  if (table.ndim() != 2 || ids.ndim() != 1 || out.ndim() != 2 || out.dim(0) != ids.dim(0) ||
      out.dim(1) != table.dim(1)) {
    return InvalidArgumentError("GetRows: expected table [V, D], ids [T], out [T, D]; got table " +
                                table.shape().ToString() + ", ids " + ids.shape().ToString() +
                                ", out " + out.shape().ToString());
  }
  if (!table.rows_contiguous() || !out.rows_contiguous()) {
    return InvalidArgumentError("GetRows: rows of table and out must be packed; got table " +
                                table.DebugString() + ", out " + out.DebugString());
  }
  RETURN_IF_ERROR(CheckRowAlignment("GetRows", "out", out, 4));
  if (out.dim(0) > 1 && out.stride(0) < 4 * out.dim(1)) {
    return InvalidArgumentError("GetRows: out " + out.DebugString() + " has overlapping rows");
  }
  if (Overlaps(out, table) || Overlaps(out, ids)) {
    return InvalidArgumentError("GetRows: out must not overlap table or ids");
  }
  const int64_t v = table.dim(0);
  for (int64_t t = 0; t < ids.dim(0); ++t) {
    const int64_t id = IdAt(ids, t);
    if (id < 0 || id >= v) {
      return InvalidArgumentError("GetRows: ids[" + std::to_string(t) +
                                  "] = " + std::to_string(id) + " is outside the table's " +
                                  std::to_string(v) + " rows");
    }
  }
  return Status::Ok();
}

}  // namespace

Status GetRowsOp(const CpuContext& ctx, const Tensor& table, const Tensor& ids, Tensor* out) {
  if (out == nullptr) return InvalidArgumentError("GetRows: out is null");
  RETURN_IF_ERROR(Validate(table, ids, *out));
  const int64_t t_count = ids.dim(0), d = table.dim(1);
  if (t_count == 0 || d == 0) return Status::Ok();
  const auto* tbase = static_cast<const char*>(table.data());
  auto* obase = static_cast<char*>(out->data());
  const size_t row_bytes = *RowBytes(table.dtype(), d);
  const int64_t min_chunk = std::max<int64_t>(1, (64 << 10) / static_cast<int64_t>(4 * d));
  ParallelFor(ctx.pool, t_count, min_chunk, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const char* src = tbase + IdAt(ids, t) * table.stride(0);
      auto* dst = reinterpret_cast<float*>(obase + t * out->stride(0));
      if (table.dtype() == DType::kF32) {
        std::memcpy(dst, src, row_bytes);
      } else {
        DequantizeRow(table.dtype(), src, dst, d);
      }
    }
  });
  return Status::Ok();
}

}  // namespace muninn::cpu
