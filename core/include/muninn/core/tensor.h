// Tensor: a typed, shaped, strided view of a Buffer.
//
// Conventions (used by every op in muninn):
//  - Shapes are listed outermost first, as in PyTorch: a [T, n_embd] activation has T rows of
//    n_embd contiguous floats; dim(ndim()-1) is the innermost dimension.
//  - Strides are in BYTES, one per dimension (ggml's nb). For plain dtypes the innermost stride is
//    normally the element size. For quantized dtypes the innermost dimension is always packed
//    blocks: its length is a multiple of the block size and its stride is reported as
//    block_bytes (per block, not per element); only the outer dimensions may be strided.
//  - A Tensor does not own memory by itself; it shares ownership of its Buffer. Copies of a Tensor
//    are views of the same bytes. Views (Slice, Transpose, Reshape) never copy.
//
// Thread-compatible: concurrent reads are fine, writes need external ordering.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "muninn/core/buffer.h"
#include "muninn/core/dtype.h"
#include "muninn/core/status.h"

namespace muninn {

inline constexpr int kMaxDims = 4;

// A small fixed-capacity shape.
class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(std::span<const int64_t> dims);

  int ndim() const { return ndim_; }
  int64_t operator[](int i) const { return dims_[static_cast<size_t>(i)]; }
  int64_t& operator[](int i) { return dims_[static_cast<size_t>(i)]; }
  int64_t numel() const;
  std::string ToString() const;  // "[2, 3, 4]"
  std::span<const int64_t> dims() const { return {dims_.data(), static_cast<size_t>(ndim_)}; }
  friend bool operator==(const Shape& a, const Shape& b);

 private:
  std::array<int64_t, kMaxDims> dims_{};
  int ndim_ = 0;
};

class Tensor {
 public:
  Tensor() = default;

  // Allocates a contiguous host tensor. InvalidArgument for negative dims, an innermost
  // dimension that is not a multiple of the block size, or a size that overflows.
  static StatusOr<Tensor> Empty(DType dtype, const Shape& shape);
  static StatusOr<Tensor> Zeros(DType dtype, const Shape& shape);
  // A contiguous view of `buffer` starting at `offset`; checks that the bytes fit.
  static StatusOr<Tensor> FromBuffer(std::shared_ptr<Buffer> buffer, size_t offset, DType dtype,
                                     const Shape& shape);
  // A strided view; checks that every addressed byte lies inside the buffer.
  static StatusOr<Tensor> FromBufferStrided(std::shared_ptr<Buffer> buffer, size_t offset,
                                            DType dtype, const Shape& shape,
                                            std::span<const int64_t> byte_strides);
  // A contiguous host tensor over caller-owned memory `data` (not copied, not owned: the caller
  // keeps it alive while the tensor or a view of it is used).
  static StatusOr<Tensor> WrapHost(void* data, DType dtype, const Shape& shape);
  // Convenience for tests and small tables: a contiguous f32 host tensor holding `values`.
  static StatusOr<Tensor> FromVector(const Shape& shape, const std::vector<float>& values);

  bool defined() const { return buffer_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return shape_.ndim(); }
  // Dimension i; negative i counts from the innermost (-1). Out of range is a programmer error.
  int64_t dim(int i) const { return shape_[AxisIndex(i)]; }
  int64_t stride(int i) const { return strides_[static_cast<size_t>(AxisIndex(i))]; }
  int64_t numel() const { return shape_.numel(); }
  Device device() const { return buffer_ ? buffer_->device() : Device::Cpu(); }
  const std::shared_ptr<Buffer>& buffer() const { return buffer_; }
  size_t offset() const { return offset_; }

  // Pointer to element 0 (host tensors only for dereferencing).
  void* data() const { return static_cast<char*>(buffer_->data()) + offset_; }
  template <typename T>
  T* data_as() const { return static_cast<T*>(data()); }
  // Pointer to the start of the row addressed by the outer indices (all dims but the last).
  void* row_ptr(std::span<const int64_t> outer) const;

  // Bytes from the first to one past the last addressed byte of a contiguous tensor.
  size_t nbytes() const;
  // True when the strides are exactly the packed row-major ones.
  bool is_contiguous() const;
  // True when the innermost dimension is packed (elements or blocks adjacent).
  bool rows_contiguous() const;
  // Number of rows: product of all dims but the last (1 for a 1-d tensor).
  int64_t num_rows() const;

  // ---- views (no copies) ----
  // Same bytes, new shape; requires a contiguous tensor and equal numel.
  StatusOr<Tensor> Reshape(const Shape& shape) const;
  // Elements [begin, end) of dimension `dim`. For the innermost dim of a quantized tensor the
  // bounds must be block-aligned.
  StatusOr<Tensor> Slice(int dim, int64_t begin, int64_t end) const;
  // Swaps two dimensions (not allowed to move the innermost dim of a quantized tensor).
  StatusOr<Tensor> Transpose(int d0, int d1) const;
  // Drops dimension 0, selecting index i.
  StatusOr<Tensor> Select(int64_t i) const;

  // A packed copy (host). Plain dtypes only for strided innermost dims.
  StatusOr<Tensor> Contiguous() const;

  std::string DebugString() const;  // "f32[2, 3] strides=[12, 4]"

 private:
  int AxisIndex(int i) const {
    const int j = i < 0 ? i + ndim() : i;
    MUNINN_CHECK(j >= 0 && j < ndim()) << "axis " << i << " of a " << ndim() << "-d tensor";
    return j;
  }

  std::shared_ptr<Buffer> buffer_;
  size_t offset_ = 0;
  DType dtype_ = DType::kF32;
  Shape shape_;
  std::array<int64_t, kMaxDims> strides_{};
};

// Packed row-major byte strides for `shape` (innermost per block for quantized dtypes).
// nullopt when a size overflows or the innermost dim is not block-aligned.
std::optional<std::array<int64_t, kMaxDims>> ContiguousStrides(DType dtype, const Shape& shape);

// The addresses [first, last) of the bytes a defined, non-empty view touches on its device.
std::pair<uintptr_t, uintptr_t> ByteExtent(const Tensor& t);

// True when two defined, non-empty views on the same device share a byte (whichever buffers own
// them: two host buffers may wrap the same memory).
bool ViewsOverlap(const Tensor& a, const Tensor& b);
// Whether a and b are the very same view: same device, first byte, dtype, shape and strides (of
// the dims longer than 1).
bool SameView(const Tensor& a, const Tensor& b);

}  // namespace muninn
