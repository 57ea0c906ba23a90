// Copy (same-dtype copies of any dtype; conversions from
// f32/f16/bf16/q4_0/q4_1/q5_0/q5_1/q8_0/q4_K/q5_K/q6_K to f32/f16/bf16, and f32 to q8_0 — the
// quantized KV cache) and GetRows on the CUDA backend. Argument rules follow core/src/cpu/copy.cc
// and get_rows.cc with device tensors; ids may be host or device tensors.
#include <cstring>
#include <string>

#include "cuda/block_decode.h"
#include "cuda/cuda_checks.h"
#include "cuda/cuda_context.h"
#include "cuda/cuda_status.h"
#include "cuda/kernels.h"

namespace muninn::cuda {
namespace {

size_t ElemAlignment(DType dtype) {
  switch (dtype) {
    case DType::kF32: case DType::kI32: return 4;
    case DType::kF64: case DType::kI64: return 8;
    case DType::kU8: return 1;
    case DType::kQ8_K: return 4;
    default: return 2;
  }
}

bool InnerPacked(const Tensor& t) {
  return t.dim(-1) <= 1 || t.stride(-1) == static_cast<int64_t>(GetDTypeInfo(t.dtype()).block_bytes);
}

bool IsHalfOrFloat(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

int64_t HostId(const Tensor& ids, int64_t t) {
  const char* p = static_cast<const char*>(ids.data()) + t * ids.stride(0);
  if (ids.dtype() == DType::kI64) {
    int64_t v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

}  // namespace

Status CopyOp(const CudaContext& ctx, const Tensor& src, Tensor* dst) {
  if (dst == nullptr) return InvalidArgumentError("Copy: dst is null");
  RETURN_IF_ERROR(CheckOnDevice(src, ctx.device, "Copy", "src"));
  RETURN_IF_ERROR(CheckOnDevice(*dst, ctx.device, "Copy", "dst"));
  if (!(src.shape() == dst->shape())) {
    return InvalidArgumentError("Copy: shapes differ, src " + src.shape().ToString() + " vs dst " +
                                dst->shape().ToString());
  }
  const bool quantize = src.dtype() == DType::kF32 && dst->dtype() == DType::kQ8_0;
  if (src.dtype() != dst->dtype() && !quantize &&
      (!CudaDecodes(src.dtype()) || !IsHalfOrFloat(dst->dtype()))) {
    return InvalidArgumentError(
        "Copy: no conversion from " + std::string(DTypeName(src.dtype())) + " to " +
        std::string(DTypeName(dst->dtype())) +
        " on the CUDA backend; sources: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, "
        "q6_K; "
        "destinations: f32, f16, bf16, and q8_0 from f32 (same-dtype copies: any dtype)");
  }
  if (quantize && src.dim(-1) % 32 != 0) {
    return InvalidArgumentError("Copy: f32 -> q8_0 needs rows of a multiple of 32 values, got " +
                                src.shape().ToString());
  }
  if (!InnerPacked(src) || !InnerPacked(*dst)) {
    return InvalidArgumentError("Copy: the CUDA backend needs packed innermost dimensions, got src " +
                                src.DebugString() + ", dst " + dst->DebugString());
  }
  for (int i = 0; i < dst->ndim(); ++i) {
    if (dst->dim(i) > 1 && dst->stride(i) == 0) {
      return InvalidArgumentError("Copy: dst " + dst->DebugString() + " repeats elements (stride 0)");
    }
  }
  if (Overlaps(src, *dst) && !SameView(src, *dst)) {
    return InvalidArgumentError("Copy: src and dst overlap; copy through a temporary");
  }
  if (src.numel() == 0 || SameView(src, *dst)) return Status::Ok();
  const auto* sp = static_cast<const char*>(src.data());
  auto* dp = static_cast<char*>(dst->data());
  if (src.dtype() == dst->dtype()) {
    const int64_t row_bytes = static_cast<int64_t>(*RowBytes(src.dtype(), src.dim(-1)));
    return CudaStatus(LaunchCopyBytes(sp, LayoutOf(src), dp, LayoutOf(*dst), src.num_rows(),
                                      row_bytes, ctx.stream),
                      "Copy kernel");
  }
  if (!RowsAligned(src, ElemAlignment(src.dtype())) || !RowsAligned(*dst, ElemAlignment(dst->dtype()))) {
    return InvalidArgumentError("Copy: rows of src " + src.DebugString() + " or dst " +
                                dst->DebugString() + " are not aligned to their element or block");
  }
  if (quantize) {
    return CudaStatus(LaunchQuantizeQ8_0(sp, LayoutOf(src), dp, LayoutOf(*dst), src.num_rows(),
                                         src.dim(-1), ctx.stream),
                      "Copy (f32 -> q8_0) kernel");
  }
  return CudaStatus(LaunchConvert(src.dtype(), sp, LayoutOf(src), dst->dtype(), dp, LayoutOf(*dst),
                                  src.num_rows(), src.dim(-1), ctx.stream),
                    "Copy (convert) kernel");
}

Status GetRowsOp(const CudaContext& ctx, const Tensor& table, const Tensor& ids, Tensor* out) {
  if (out == nullptr) return InvalidArgumentError("GetRows: out is null");
  RETURN_IF_ERROR(CheckOnDevice(table, ctx.device, "GetRows", "table"));
  RETURN_IF_ERROR(CheckF32Rows(*out, ctx.device, "GetRows", "out"));
  if (!CudaDecodes(table.dtype())) {
    return InvalidArgumentError("GetRows: table dtype " + std::string(DTypeName(table.dtype())) +
                                " is not supported by the CUDA backend (f32, f16, bf16, q4_0, "
                                "q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K)");
  }
  if (!ids.defined() || (ids.dtype() != DType::kI32 && ids.dtype() != DType::kI64)) {
    return InvalidArgumentError("GetRows: ids must be i32 (or i64)");
  }
  if (table.ndim() != 2 || ids.ndim() != 1 || out->ndim() != 2 || out->dim(0) != ids.dim(0) ||
      out->dim(1) != table.dim(1)) {
    return InvalidArgumentError("GetRows: expected table [V, D], ids [T], out [T, D]; got table " +
                                table.shape().ToString() + ", ids " + ids.shape().ToString() +
                                ", out " + out->shape().ToString());
  }
  if (!table.rows_contiguous() || !RowsAligned(table, ElemAlignment(table.dtype()))) {
    return InvalidArgumentError("GetRows: table rows must be packed and aligned, got " +
                                table.DebugString());
  }
  if (out->dim(0) > 1 && out->stride(0) < 4 * out->dim(1)) {
    return InvalidArgumentError("GetRows: out " + out->DebugString() + " has overlapping rows");
  }
  if (Overlaps(*out, table) || Overlaps(*out, ids)) {
    return InvalidArgumentError("GetRows: out must not overlap table or ids");
  }
  const int64_t v = table.dim(0), n_ids = ids.dim(0);
  if (ids.device().is_cpu()) {
    for (int64_t t = 0; t < n_ids; ++t) {
      const int64_t id = HostId(ids, t);
      if (id < 0 || id >= v) {
        return InvalidArgumentError("GetRows: ids[" + std::to_string(t) + "] = " +
                                    std::to_string(id) + " is outside the table's " +
                                    std::to_string(v) + " rows");
      }
    }
  }
  if (n_ids == 0 || table.dim(1) == 0) return Status::Ok();
  ASSIGN_OR_RETURN(const Tensor dev_ids, IndexOnDevice(ctx, ids, "GetRows", "ids"));
  const bool i64 = ids.dtype() == DType::kI64;
  if (!ids.device().is_cpu()) {
    // Device ids: a check kernel and one flag read back before anything is written.
    ASSIGN_OR_RETURN(Tensor flag, ctx.Empty(DType::kI32, Shape{1}));
    MUNINN_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(flag.data(), 0, sizeof(int32_t), ctx.stream));
    MUNINN_CUDA_RETURN_IF_ERROR(LaunchCheckIds(static_cast<const char*>(dev_ids.data()),
                                               dev_ids.stride(0), i64, n_ids, v,
                                               flag.data_as<int>(), ctx.stream));
    int32_t bad = 0;
    RETURN_IF_ERROR(ctx.staging->Download(flag.data(), sizeof(bad), &bad, ctx.stream));
    if (bad != 0) {
      return InvalidArgumentError("GetRows: an id is outside the table's " + std::to_string(v) +
                                  " rows");
    }
  }
  return CudaStatus(LaunchGetRows(table.dtype(), static_cast<const char*>(table.data()),
                                  table.stride(0), static_cast<const char*>(dev_ids.data()),
                                  dev_ids.stride(0), i64, n_ids, table.dim(1),
                                  static_cast<char*>(out->data()),
                                  out->ndim() == 2 ? out->stride(0) : 4 * table.dim(1), ctx.stream),
                    "GetRows kernel");
}

}  // namespace muninn::cuda
