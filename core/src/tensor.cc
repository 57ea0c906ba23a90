#include "muninn/core/tensor.h"

#include <cstring>
#include <sstream>

namespace muninn {

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::span<const int64_t>(dims.begin(), dims.size())) {}

Shape::Shape(std::span<const int64_t> dims) {
  MUNINN_CHECK(dims.size() <= static_cast<size_t>(kMaxDims)) << "at most " << kMaxDims << " dims";
  ndim_ = static_cast<int>(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) dims_[i] = dims[i];
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim_; ++i) n *= dims_[static_cast<size_t>(i)];
  return n;
}

std::string Shape::ToString() const {
  std::ostringstream os;
  os << "[";
  for (int i = 0; i < ndim_; ++i) os << (i ? ", " : "") << dims_[static_cast<size_t>(i)];
  os << "]";
  return os.str();
}

bool operator==(const Shape& a, const Shape& b) {
  if (a.ndim_ != b.ndim_) return false;
  for (int i = 0; i < a.ndim_; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

std::optional<std::array<int64_t, kMaxDims>> ContiguousStrides(DType dtype, const Shape& shape) {
  std::array<int64_t, kMaxDims> strides{};
  const int nd = shape.ndim();
  if (nd == 0) return strides;
  for (int i = 0; i < nd; ++i) {
    if (shape[i] < 0) return std::nullopt;
  }
  const DTypeInfo& info = GetDTypeInfo(dtype);
  auto row = RowBytes(dtype, shape[nd - 1]);
  if (!row) return std::nullopt;
  strides[static_cast<size_t>(nd - 1)] = static_cast<int64_t>(info.block_bytes);
  int64_t acc = static_cast<int64_t>(*row);
  if (acc < 0) return std::nullopt;
  for (int i = nd - 2; i >= 0; --i) {
    strides[static_cast<size_t>(i)] = acc;
    if (__builtin_mul_overflow(acc, shape[i], &acc)) return std::nullopt;
  }
  return strides;
}

namespace {

// Total bytes of a contiguous tensor (0 when any dim is 0).
std::optional<size_t> ContiguousBytes(DType dtype, const Shape& shape) {
  if (shape.ndim() == 0) return GetDTypeInfo(dtype).block_bytes;
  auto row = RowBytes(dtype, shape[shape.ndim() - 1]);
  if (!row) return std::nullopt;
  size_t total = *row;
  for (int i = shape.ndim() - 2; i >= 0; --i) {
    if (shape[i] < 0 || __builtin_mul_overflow(total, static_cast<size_t>(shape[i]), &total)) {
      return std::nullopt;
    }
  }
  return total;
}

Status ShapeError(DType dtype, const Shape& shape) {
  return InvalidArgumentError("invalid shape " + shape.ToString() + " for dtype " +
                              std::string(DTypeName(dtype)) +
                              ": negative or overflowing dims, or an innermost dim that is not a "
                              "multiple of the block size " +
                              std::to_string(BlockSize(dtype)));
}

}  // namespace

StatusOr<Tensor> Tensor::Empty(DType dtype, const Shape& shape) {
  auto bytes = ContiguousBytes(dtype, shape);
  auto strides = ContiguousStrides(dtype, shape);
  if (!bytes || !strides) return ShapeError(dtype, shape);
  ASSIGN_OR_RETURN(auto buffer, AllocateHostBuffer(*bytes));
  Tensor t;
  t.buffer_ = std::move(buffer);
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = *strides;
  return t;
}

StatusOr<Tensor> Tensor::WrapHost(void* data, DType dtype, const Shape& shape) {
  auto bytes = ContiguousBytes(dtype, shape);
  if (!bytes) return ShapeError(dtype, shape);
  return FromBuffer(WrapHostMemory(data, *bytes, nullptr), 0, dtype, shape);
}

StatusOr<Tensor> Tensor::Zeros(DType dtype, const Shape& shape) {
  ASSIGN_OR_RETURN(Tensor t, Empty(dtype, shape));
  std::memset(t.data(), 0, t.buffer()->size());
  return t;
}

StatusOr<Tensor> Tensor::FromBuffer(std::shared_ptr<Buffer> buffer, size_t offset, DType dtype,
                                    const Shape& shape) {
  auto strides = ContiguousStrides(dtype, shape);
  if (!strides) return ShapeError(dtype, shape);
  return FromBufferStrided(std::move(buffer), offset, dtype, shape,
                           std::span<const int64_t>(strides->data(), static_cast<size_t>(shape.ndim())));
}

StatusOr<Tensor> Tensor::FromBufferStrided(std::shared_ptr<Buffer> buffer, size_t offset,
                                           DType dtype, const Shape& shape,
                                           std::span<const int64_t> byte_strides) {
  if (buffer == nullptr) return InvalidArgumentError("tensor view of a null buffer");
  if (byte_strides.size() != static_cast<size_t>(shape.ndim())) {
    return InvalidArgumentError("tensor view: " + std::to_string(byte_strides.size()) +
                                " strides for shape " + shape.ToString());
  }
  const DTypeInfo& info = GetDTypeInfo(dtype);
  const int nd = shape.ndim();
  if (nd > 0 && (shape[nd - 1] < 0 || shape[nd - 1] % info.block_size != 0)) {
    return ShapeError(dtype, shape);
  }
  if (info.quantized && nd > 0 && byte_strides[static_cast<size_t>(nd - 1)] != static_cast<int64_t>(info.block_bytes)) {
    return InvalidArgumentError("a quantized tensor's innermost dimension must be packed blocks");
  }
  // Extent: the furthest byte addressed, computed with overflow checks. Strides must be >= 0.
  bool empty = false;
  uint64_t last = 0;  // offset of the last element/block start, relative to `offset`
  for (int i = 0; i < nd; ++i) {
    const int64_t n = shape[i];
    const int64_t s = byte_strides[static_cast<size_t>(i)];
    if (n < 0 || s < 0) return InvalidArgumentError("tensor view: negative dim or stride");
    if (n == 0) empty = true;
    int64_t count = (i == nd - 1) ? n / info.block_size : n;
    if (count == 0) continue;
    uint64_t term;
    if (__builtin_mul_overflow(static_cast<uint64_t>(count - 1), static_cast<uint64_t>(s), &term) ||
        __builtin_add_overflow(last, term, &last)) {
      return InvalidArgumentError("tensor view: extent overflows");
    }
  }
  if (!empty) {
    uint64_t end;
    if (__builtin_add_overflow(last, static_cast<uint64_t>(info.block_bytes), &end) ||
        __builtin_add_overflow(end, static_cast<uint64_t>(offset), &end) || end > buffer->size()) {
      return OutOfRangeError("tensor view " + shape.ToString() + " at offset " +
                             std::to_string(offset) + " does not fit in a buffer of " +
                             std::to_string(buffer->size()) + " bytes");
    }
  } else if (offset > buffer->size()) {
    return OutOfRangeError("tensor view offset past the end of its buffer");
  }
  Tensor t;
  t.buffer_ = std::move(buffer);
  t.offset_ = offset;
  t.dtype_ = dtype;
  t.shape_ = shape;
  for (int i = 0; i < nd; ++i) t.strides_[static_cast<size_t>(i)] = byte_strides[static_cast<size_t>(i)];
  return t;
}

StatusOr<Tensor> Tensor::FromVector(const Shape& shape, const std::vector<float>& values) {
  if (shape.numel() != static_cast<int64_t>(values.size())) {
    return InvalidArgumentError("FromVector: shape " + shape.ToString() + " needs " +
                                std::to_string(shape.numel()) + " values, got " +
                                std::to_string(values.size()));
  }
  ASSIGN_OR_RETURN(Tensor t, Empty(DType::kF32, shape));
  if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * sizeof(float));
  return t;
}

void* Tensor::row_ptr(std::span<const int64_t> outer) const {
  MUNINN_CHECK(outer.size() + 1 == static_cast<size_t>(ndim()) || (ndim() <= 1 && outer.empty()));
  char* p = static_cast<char*>(data());
  for (size_t i = 0; i < outer.size(); ++i) {
    MUNINN_DCHECK(outer[i] >= 0 && outer[i] < shape_[static_cast<int>(i)]);
    p += outer[i] * strides_[i];
  }
  return p;
}

size_t Tensor::nbytes() const { return ContiguousBytes(dtype_, shape_).value_or(0); }

bool Tensor::is_contiguous() const {
  auto s = ContiguousStrides(dtype_, shape_);
  if (!s) return false;
  for (int i = 0; i < ndim(); ++i) {
    if (shape_[i] > 1 && (*s)[static_cast<size_t>(i)] != strides_[static_cast<size_t>(i)]) return false;
  }
  return true;
}

bool Tensor::rows_contiguous() const {
  if (ndim() == 0) return true;
  return shape_[ndim() - 1] <= BlockSize(dtype_) ||
         strides_[static_cast<size_t>(ndim() - 1)] == static_cast<int64_t>(GetDTypeInfo(dtype_).block_bytes);
}

int64_t Tensor::num_rows() const {
  int64_t n = 1;
  for (int i = 0; i + 1 < ndim(); ++i) n *= shape_[i];
  return n;
}

StatusOr<Tensor> Tensor::Reshape(const Shape& shape) const {
  if (!is_contiguous()) return InvalidArgumentError("Reshape needs a contiguous tensor; call Contiguous() first");
  if (shape.numel() != numel()) {
    return InvalidArgumentError("Reshape from " + shape_.ToString() + " to " + shape.ToString() +
                                " changes the number of elements");
  }
  return FromBuffer(buffer_, offset_, dtype_, shape);
}

StatusOr<Tensor> Tensor::Slice(int d, int64_t begin, int64_t end) const {
  if (d < 0) d += ndim();
  if (d < 0 || d >= ndim()) return InvalidArgumentError("Slice: no dimension " + std::to_string(d));
  if (begin < 0 || end < begin || end > shape_[d]) {
    return OutOfRangeError("Slice [" + std::to_string(begin) + ", " + std::to_string(end) +
                           ") of dim " + std::to_string(d) + " with size " + std::to_string(shape_[d]));
  }
  Tensor t = *this;
  const bool innermost = d == ndim() - 1;
  const int64_t bs = BlockSize(dtype_);
  if (innermost && (begin % bs != 0 || end % bs != 0)) {
    return InvalidArgumentError("Slice of a quantized row must be block-aligned");
  }
  const int64_t unit = innermost ? begin / bs : begin;
  t.offset_ += static_cast<size_t>(unit * strides_[static_cast<size_t>(d)]);
  t.shape_[d] = end - begin;
  return t;
}

StatusOr<Tensor> Tensor::Transpose(int d0, int d1) const {
  if (d0 < 0) d0 += ndim();
  if (d1 < 0) d1 += ndim();
  if (d0 < 0 || d1 < 0 || d0 >= ndim() || d1 >= ndim()) return InvalidArgumentError("Transpose: bad dims");
  if (IsQuantized(dtype_) && (d0 == ndim() - 1 || d1 == ndim() - 1) && d0 != d1) {
    return InvalidArgumentError("Transpose cannot move the innermost dim of a quantized tensor");
  }
  Tensor t = *this;
  std::swap(t.shape_[d0], t.shape_[d1]);
  std::swap(t.strides_[static_cast<size_t>(d0)], t.strides_[static_cast<size_t>(d1)]);
  return t;
}

StatusOr<Tensor> Tensor::Select(int64_t i) const {
  if (ndim() < 1) return InvalidArgumentError("Select on a 0-d tensor");
  if (i < 0 || i >= shape_[0]) return OutOfRangeError("Select index " + std::to_string(i) + " of " + std::to_string(shape_[0]));
  if (ndim() == 1 && IsQuantized(dtype_)) return InvalidArgumentError("Select of one quantized element");
  Tensor t;
  t.buffer_ = buffer_;
  t.dtype_ = dtype_;
  t.offset_ = offset_ + static_cast<size_t>(i * strides_[0]);
  std::vector<int64_t> dims(shape_.dims().begin() + 1, shape_.dims().end());
  t.shape_ = Shape(std::span<const int64_t>(dims));
  for (int k = 1; k < ndim(); ++k) t.strides_[static_cast<size_t>(k - 1)] = strides_[static_cast<size_t>(k)];
  return t;
}

StatusOr<Tensor> Tensor::Contiguous() const {
  if (!device().is_cpu()) return UnimplementedError("Contiguous() of a device tensor; Transfer it to the host first");
  ASSIGN_OR_RETURN(Tensor out, Empty(dtype_, shape_));
  if (numel() == 0) return out;
  const int nd = ndim();
  const DTypeInfo& info = GetDTypeInfo(dtype_);
  const int64_t inner = nd == 0 ? 1 : shape_[nd - 1];
  const size_t row_bytes = *RowBytes(dtype_, inner);
  const bool packed_rows = nd == 0 || strides_[static_cast<size_t>(nd - 1)] == static_cast<int64_t>(info.block_bytes);
  std::array<int64_t, kMaxDims> idx{};
  const int64_t rows = num_rows();
  char* dst = static_cast<char*>(out.data());
  for (int64_t r = 0; r < rows; ++r) {
    const char* src = static_cast<const char*>(data());
    for (int k = 0; k + 1 < nd; ++k) src += idx[static_cast<size_t>(k)] * strides_[static_cast<size_t>(k)];
    if (packed_rows) {
      std::memcpy(dst, src, row_bytes);
    } else {
      for (int64_t j = 0; j < inner; ++j) {
        std::memcpy(dst + j * static_cast<int64_t>(info.block_bytes), src + j * strides_[static_cast<size_t>(nd - 1)], info.block_bytes);
      }
    }
    dst += row_bytes;
    for (int k = nd - 2; k >= 0; --k) {
      if (++idx[static_cast<size_t>(k)] < shape_[k]) break;
      idx[static_cast<size_t>(k)] = 0;
    }
  }
  return out;
}

std::string Tensor::DebugString() const {
  std::ostringstream os;
  os << DTypeName(dtype_) << shape_.ToString() << " strides=[";
  for (int i = 0; i < ndim(); ++i) os << (i ? ", " : "") << strides_[static_cast<size_t>(i)];
  os << "] " << device().ToString();
  return os.str();
}

std::pair<uintptr_t, uintptr_t> ByteExtent(const Tensor& t) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(t.data());
  uintptr_t last = first;
  for (int i = 0; i < t.ndim(); ++i) {
    int64_t count = t.dim(i);
    if (i == t.ndim() - 1) count /= BlockSize(t.dtype());  // a quantized row strides per block
    if (count > 0) last += static_cast<uintptr_t>((count - 1) * t.stride(i));
  }
  return {first, last + GetDTypeInfo(t.dtype()).block_bytes};
}

bool SameView(const Tensor& a, const Tensor& b) {
  if (a.device() != b.device() || a.data() != b.data() || a.dtype() != b.dtype() ||
      !(a.shape() == b.shape())) {
    return false;
  }
  for (int i = 0; i < a.ndim(); ++i) {
    if (a.dim(i) > 1 && a.stride(i) != b.stride(i)) return false;
  }
  return true;
}

bool ViewsOverlap(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined() || a.numel() == 0 || b.numel() == 0) return false;
  if (a.device() != b.device()) return false;
  const auto [a0, a1] = ByteExtent(a);
  const auto [b0, b1] = ByteExtent(b);
  return a0 < b1 && b0 < a1;
}

}  // namespace muninn
