// Private to the CPU backend: small checks shared by the Copy, GetRows and MatMul ops.
#pragma once

#include <cstdint>
#include <string>

#include "muninn/core/status.h"
#include "muninn/core/tensor.h"

namespace muninn::cpu {

// The bytes [begin, end) a (non-empty) host view addresses.
struct ByteSpan {
  uintptr_t begin = 0;
  uintptr_t end = 0;
};

inline ByteSpan SpanOf(const Tensor& t) {
  ByteSpan s;
  s.begin = reinterpret_cast<uintptr_t>(t.data());
  uint64_t last = 0;
  const int nd = t.ndim();
  for (int i = 0; i < nd; ++i) {
    int64_t count = t.dim(i);
    if (i == nd - 1) count /= BlockSize(t.dtype());
    if (count > 0) last += static_cast<uint64_t>(count - 1) * static_cast<uint64_t>(t.stride(i));
  }
  s.end = s.begin + last + GetDTypeInfo(t.dtype()).block_bytes;
  return s;
}

// True when two non-empty views share any byte.
inline bool Overlaps(const Tensor& a, const Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0 || a.buffer() != b.buffer()) return false;
  const ByteSpan x = SpanOf(a), y = SpanOf(b);
  return x.begin < y.end && y.begin < x.end;
}

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
