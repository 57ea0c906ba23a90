// Private to the CPU backend: small checks shared by the Copy, GetRows and MatMul ops.
#pragma once

#include <cstdint>
#include <string>

#include "muninn/core/status.h"
#include "muninn/core/tensor.h"

namespace muninn::cpu {

// True when two non-empty views share any byte.
inline bool Overlaps(const Tensor& a, const Tensor& b) { return ViewsOverlap(a, b); }

// InvalidArgument unless every row start of `t` is aligned to `align` bytes (the kernels read
// blocks and floats through typed pointers).
inline Status CheckRowAlignment(const char* op, const char* name, const Tensor& t, size_t align) {
  bool ok = reinterpret_cast<uintptr_t>(t.data()) % align == 0;
  for (int i = 0; i + 1 < t.ndim(); ++i) ok = ok && static_cast<size_t>(t.stride(i)) % align == 0;
  if (!ok) {
    return InvalidArgumentError(std::string(op) + ": " + name + " " + t.DebugString() +
                                " has rows not aligned to " + std::to_string(align) +
                                " bytes; make it contiguous first");
  }
  return Status::Ok();
}

// The alignment the kernels need for rows of `dtype`: the element size for plain types, the
// block's widest field for block formats.
inline size_t RowAlignment(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF64:
    case DType::kI64:
      return 8;
    case DType::kU8:
      return 1;
    case DType::kQ8_K:
      return 4;
    default:
      return 2;
  }
}

}  // namespace muninn::cpu
