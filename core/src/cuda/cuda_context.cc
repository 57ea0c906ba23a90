#include "cuda/cuda_context.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "cuda/cuda_status.h"

namespace muninn::cuda {

Status Staging::InitSlots() {
  void* pinned = nullptr;
  MUNINN_CUDA_RETURN_IF_ERROR(cudaMallocHost(&pinned, kSlots * kSlotBytes));
  slots_.reset(pinned);
  for (EventPtr& e : slot_events_) {
    cudaEvent_t ev = nullptr;
    MUNINN_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    e.reset(ev);
  }
  return Status::Ok();
}

Status Staging::Upload(const void* host, size_t bytes, void* device, cudaStream_t stream) {
  const auto* src = static_cast<const char*>(host);
  auto* dst = static_cast<char*>(device);
  if (slots_ != nullptr && bytes <= kSlotBytes) {
    const int slot = next_slot_;
    next_slot_ = (next_slot_ + 1) % kSlots;
    // The slot fed a copy kSlots uploads ago; that copy is almost always done.
    MUNINN_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(slot_events_[slot].get()));
    char* staged = static_cast<char*>(slots_.get()) + slot * kSlotBytes;
    std::memcpy(staged, src, bytes);
    MUNINN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(dst, staged, bytes, cudaMemcpyHostToDevice, stream));
    MUNINN_CUDA_RETURN_IF_ERROR(cudaEventRecord(slot_events_[slot].get(), stream));
    return Status::Ok();
  }
  int half = 0;
  for (size_t off = 0; off < bytes; off += half_, half ^= 1) {
    const size_t n = std::min(half_, bytes - off);
    // The half may still feed an earlier copy: wait for it before overwriting.
    MUNINN_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(events_[half].get()));
    std::memcpy(Half(half), src + off, n);
    MUNINN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(dst + off, Half(half), n, cudaMemcpyHostToDevice, stream));
    MUNINN_CUDA_RETURN_IF_ERROR(cudaEventRecord(events_[half].get(), stream));
  }
  return Status::Ok();
}

Status Staging::Download(const void* device, size_t bytes, void* host, cudaStream_t stream) {
  const auto* src = static_cast<const char*>(device);
  auto* dst = static_cast<char*>(host);
  // Chunk i goes to half i % 2; chunk i + 1 is queued before chunk i is copied out.
  auto enqueue = [&](size_t off, int half) -> Status {
    MUNINN_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(events_[half].get()));
    const size_t n = std::min(half_, bytes - off);
    MUNINN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(Half(half), src + off, n, cudaMemcpyDeviceToHost, stream));
    MUNINN_CUDA_RETURN_IF_ERROR(cudaEventRecord(events_[half].get(), stream));
    return Status::Ok();
  };
  if (bytes == 0) return Status::Ok();
  RETURN_IF_ERROR(enqueue(0, 0));
  int half = 0;
  for (size_t off = 0; off < bytes; off += half_, half ^= 1) {
    if (off + half_ < bytes) RETURN_IF_ERROR(enqueue(off + half_, half ^ 1));
    MUNINN_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(events_[half].get()));
    std::memcpy(dst + off, Half(half), std::min(half_, bytes - off));
  }
  return Status::Ok();
}

StatusOr<Tensor> CudaContext::Empty(DType dtype, const Shape& shape) const {
  const auto strides = ContiguousStrides(dtype, shape);
  if (!strides) {
    return InvalidArgumentError("cannot allocate " + std::string(DTypeName(dtype)) +
                                shape.ToString() +
                                ": negative dims, an innermost dim that is not a multiple of the "
                                "block size, or a size that overflows");
  }
  int64_t rows = 1;
  for (int i = 0; i + 1 < shape.ndim(); ++i) rows *= shape[i];
  const auto row_bytes = RowBytes(dtype, shape.ndim() > 0 ? shape[shape.ndim() - 1] : 1);
  if (!row_bytes || (rows > 0 && *row_bytes > SIZE_MAX / static_cast<size_t>(rows))) {
    return InvalidArgumentError("tensor size overflows: " + shape.ToString());
  }
  ASSIGN_OR_RETURN(auto buffer, allocator->Allocate(*row_bytes * static_cast<size_t>(rows)));
  return Tensor::FromBuffer(std::move(buffer), 0, dtype, shape);
}

StatusOr<Tensor> IndexOnDevice(const CudaContext& ctx, const Tensor& t, std::string_view op,
                               std::string_view name) {
  const std::string what = std::string(op) + ": " + std::string(name) + " ";
  if (!t.defined()) return InvalidArgumentError(what + "is an undefined tensor");
  if ((t.dtype() != DType::kI32 && t.dtype() != DType::kI64) || t.ndim() != 1) {
    return InvalidArgumentError(what + "must be i32 (or i64) [n], got " + t.DebugString());
  }
  const size_t elem = t.dtype() == DType::kI32 ? 4 : 8;
  if (reinterpret_cast<uintptr_t>(t.data()) % elem != 0 || t.stride(0) % static_cast<int64_t>(elem) != 0) {
    return InvalidArgumentError(what + "is not aligned to its element size: " + t.DebugString());
  }
  if (t.device() == Device::Cuda(ctx.device)) return t;
  if (!t.device().is_cpu()) {
    return InvalidArgumentError(what + "lives on " + t.device().ToString() +
                                ", neither the host nor this backend's cuda:" +
                                std::to_string(ctx.device));
  }
  Tensor host = t;
  if (!t.is_contiguous()) {
    ASSIGN_OR_RETURN(host, t.Contiguous());
  }
  ASSIGN_OR_RETURN(Tensor dev, ctx.Empty(t.dtype(), t.shape()));
  RETURN_IF_ERROR(ctx.staging->Upload(host.data(), host.nbytes(), dev.data(), ctx.stream));
  return dev;
}

}  // namespace muninn::cuda
