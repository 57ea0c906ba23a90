#include "cpu/eltwise_util.h"

#include <string>

namespace muninn::cpu {
namespace {

std::string Prefix(std::string_view op, std::string_view name) {
  return std::string(op) + ": " + std::string(name) + " ";
}

}  // namespace

Status CheckF32Rows(const Tensor& t, std::string_view op, std::string_view name) {
  if (!t.defined()) return InvalidArgumentError(Prefix(op, name) + "is an undefined tensor");
  if (t.dtype() != DType::kF32) {
    return InvalidArgumentError(Prefix(op, name) + "must be f32, got " + t.DebugString());
  }
  if (!t.device().is_cpu()) {
    return InvalidArgumentError(Prefix(op, name) + "must be a host tensor, got " + t.DebugString() +
                                "; Transfer it to the CPU first");
  }
  if (t.ndim() == 0) return InvalidArgumentError(Prefix(op, name) + "needs at least one dim");
  if (!t.rows_contiguous()) {
    return InvalidArgumentError(Prefix(op, name) +
                                "must have packed rows (innermost stride 4), got " +
                                t.DebugString() + "; call Contiguous() first");
  }
  bool aligned = reinterpret_cast<uintptr_t>(t.data()) % alignof(float) == 0;
  for (int i = 0; i < t.ndim(); ++i) aligned = aligned && t.stride(i) % 4 == 0;
  if (!aligned) {
    return InvalidArgumentError(Prefix(op, name) + "is not float-aligned: " + t.DebugString());
  }
  return Status::Ok();
}

Status CheckOutput(const Tensor& x, const Tensor* out, std::string_view op) {
  if (out == nullptr) return InvalidArgumentError(std::string(op) + ": out is null");
  RETURN_IF_ERROR(CheckF32Rows(*out, op, "out"));
  if (!(out->shape() == x.shape())) {
    return InvalidArgumentError(Prefix(op, "out") + "has shape " + out->shape().ToString() +
                                " but the input has " + x.shape().ToString());
  }
  return Status::Ok();
}

Status CheckOptionalVector(const Tensor& t, int64_t n, std::string_view op, std::string_view name) {
  if (!t.defined()) return Status::Ok();
  RETURN_IF_ERROR(CheckF32Rows(t, op, name));
  if (t.ndim() != 1 || t.dim(0) != n) {
    return InvalidArgumentError(Prefix(op, name) + "must be [" + std::to_string(n) + "], got " +
                                t.shape().ToString());
  }
  return Status::Ok();
}

Status CheckAliasing(const Tensor& in, const Tensor& out, std::string_view op,
                     std::string_view name) {
  if (!ViewsOverlap(in, out)) return Status::Ok();
  bool same = in.data() == out.data() && in.shape() == out.shape();
  for (int i = 0; same && i < in.ndim(); ++i) {
    same = in.dim(i) == 1 || in.stride(i) == out.stride(i);
  }
  if (same) return Status::Ok();
  return InvalidArgumentError(Prefix(op, "out") + "overlaps " + std::string(name) +
                              " without being the same view (" + out.DebugString() + " vs " +
                              in.DebugString() + "); only exact in-place aliasing is supported");
}

F32Rows::F32Rows(const Tensor& t)
    : base_(static_cast<char*>(t.data())),
      rows_(t.num_rows()),
      cols_(t.dim(-1)),
      n_outer_(t.ndim() - 1) {
  for (int k = 0; k < n_outer_; ++k) {
    dims_[static_cast<size_t>(k)] = t.dim(k);
    strides_[static_cast<size_t>(k)] = t.stride(k);
  }
}

}  // namespace muninn::cpu
