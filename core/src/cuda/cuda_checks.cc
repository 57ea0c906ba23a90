#include "cuda/cuda_checks.h"

#include <cmath>
#include <string>
#include <utility>

namespace muninn::cuda {
namespace {

std::string Prefix(std::string_view op, std::string_view name) {
  return std::string(op) + ": " + std::string(name) + " ";
}

}  // namespace

Status CheckOnDevice(const Tensor& t, int device, std::string_view op, std::string_view name) {
  if (!t.defined()) return InvalidArgumentError(Prefix(op, name) + "is an undefined tensor");
  if (t.device() != Device::Cuda(device)) {
    return InvalidArgumentError(Prefix(op, name) + "must be on cuda:" + std::to_string(device) +
                                ", got " + t.DebugString() + " on " + t.device().ToString() +
                                "; Transfer it to the device first");
  }
  if (t.ndim() < 1 || t.ndim() > 4) {
    return InvalidArgumentError(Prefix(op, name) + "needs 1 to 4 dims, got " + t.DebugString());
  }
  return Status::Ok();
}

Status CheckF32Rows(const Tensor& t, int device, std::string_view op, std::string_view name) {
  RETURN_IF_ERROR(CheckOnDevice(t, device, op, name));
  if (t.dtype() != DType::kF32) {
    return InvalidArgumentError(Prefix(op, name) + "must be f32, got " + t.DebugString());
  }
  if (!t.rows_contiguous()) {
    return InvalidArgumentError(Prefix(op, name) +
                                "must have packed rows (innermost stride 4), got " +
                                t.DebugString() + "; Copy it into a contiguous tensor first");
  }
  bool aligned = reinterpret_cast<uintptr_t>(t.data()) % alignof(float) == 0;
  for (int i = 0; i < t.ndim(); ++i) aligned = aligned && t.stride(i) % 4 == 0;
  if (!aligned) {
    return InvalidArgumentError(Prefix(op, name) + "is not float-aligned: " + t.DebugString());
  }
  return Status::Ok();
}

Status CheckOutput(const Tensor& x, const Tensor* out, int device, std::string_view op) {
  if (out == nullptr) return InvalidArgumentError(std::string(op) + ": out is null");
  RETURN_IF_ERROR(CheckF32Rows(*out, device, op, "out"));
  if (!(out->shape() == x.shape())) {
    return InvalidArgumentError(Prefix(op, "out") + "has shape " + out->shape().ToString() +
                                " but the input has " + x.shape().ToString());
  }
  return Status::Ok();
}

Status CheckOptionalVector(const Tensor& t, int64_t n, int device, std::string_view op,
                           std::string_view name) {
  if (!t.defined()) return Status::Ok();
  RETURN_IF_ERROR(CheckF32Rows(t, device, op, name));
  if (t.ndim() != 1 || t.dim(0) != n) {
    return InvalidArgumentError(Prefix(op, name) + "must be [" + std::to_string(n) + "], got " +
                                t.shape().ToString());
  }
  return Status::Ok();
}

bool Overlaps(const Tensor& a, const Tensor& b) { return ViewsOverlap(a, b); }

Status CheckAliasing(const Tensor& in, const Tensor& out, std::string_view op,
                     std::string_view name) {
  if (!Overlaps(in, out)) return Status::Ok();
  bool same = in.data() == out.data() && in.shape() == out.shape() && in.dtype() == out.dtype();
  for (int i = 0; same && i < in.ndim(); ++i) {
    same = in.dim(i) == 1 || in.stride(i) == out.stride(i);
  }
  if (same) return Status::Ok();
  return InvalidArgumentError(Prefix(op, "out") + "overlaps " + std::string(name) +
                              " without being the same view (" + out.DebugString() + " vs " +
                              in.DebugString() + "); only exact in-place aliasing is supported");
}

RowLayout LayoutOf(const Tensor& t) {
  RowLayout l;
  l.n_outer = t.ndim() - 1;
  for (int k = 0; k < l.n_outer; ++k) {
    l.dims[k] = t.dim(k);
    l.strides[k] = t.stride(k);
  }
  return l;
}

bool RowsAligned(const Tensor& t, size_t align) {
  bool ok = reinterpret_cast<uintptr_t>(t.data()) % align == 0;
  for (int i = 0; i + 1 < t.ndim(); ++i) ok = ok && static_cast<size_t>(t.stride(i)) % align == 0;
  return ok;
}

Status CheckEps(float eps, std::string_view op) {
  if (!std::isfinite(eps) || eps < 0.0f) {
    return InvalidArgumentError(std::string(op) + ": eps must be finite and >= 0, got " +
                                std::to_string(eps));
  }
  return Status::Ok();
}

}  // namespace muninn::cuda
