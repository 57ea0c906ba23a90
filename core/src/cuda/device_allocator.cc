#include "cuda/device_allocator.h"

#include <cuda_runtime_api.h>

#include "cuda/cuda_status.h"

namespace muninn::cuda {

// A block from the allocator; gives it back to the cache when the last Tensor lets go.
class DeviceBuffer final : public Buffer {
 public:
  DeviceBuffer(void* ptr, size_t bytes, size_t size_class, int device,
               std::shared_ptr<DeviceAllocator> owner)
      : Buffer(ptr, bytes, Device::Cuda(device)), size_class_(size_class), owner_(std::move(owner)) {}
  ~DeviceBuffer() override { owner_->Release(data(), size_class_); }

 private:
  size_t size_class_;
  std::shared_ptr<DeviceAllocator> owner_;
};

size_t DeviceAllocator::SizeClass(size_t bytes) {
  constexpr size_t kSmall = 256, kLarge = size_t{1} << 20;
  if (bytes == 0) return kSmall;
  const size_t g = bytes < kLarge ? kSmall : kLarge;
  return (bytes + g - 1) / g * g;
}

DeviceAllocator::~DeviceAllocator() { ReleaseCache(); }

StatusOr<std::shared_ptr<Buffer>> DeviceAllocator::Allocate(size_t bytes) {
  const size_t cls = SizeClass(bytes);
  if (cls < bytes) return ResourceExhaustedError("device buffer size overflows");
  void* ptr = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(cls);
    if (it != free_.end() && !it->second.empty()) {
      ptr = it->second.back();
      it->second.pop_back();
      cached_ -= cls;
    }
  }
  if (ptr == nullptr) {
    MUNINN_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    cudaError_t err = cudaMalloc(&ptr, cls);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      ReleaseCache();
      err = cudaMalloc(&ptr, cls);
    }
    if (err != cudaSuccess) {
      return CudaStatus(err, "cudaMalloc(" + std::to_string(bytes) + " bytes)");
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_use_ += cls;
  }
  return std::shared_ptr<Buffer>(
      std::make_shared<DeviceBuffer>(ptr, bytes, cls, device_, shared_from_this()));
}

void DeviceAllocator::Release(void* ptr, size_t size_class) {
  std::lock_guard<std::mutex> lock(mu_);
  in_use_ -= size_class;
  cached_ += size_class;
  free_[size_class].push_back(ptr);
}

void DeviceAllocator::ReleaseCache() {
  std::map<size_t, std::vector<void*>> blocks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    blocks.swap(free_);
    cached_ = 0;
  }
  if (blocks.empty()) return;
  // Best effort: a failing cudaFree (device lost) leaves nothing to recover.
  if (cudaSetDevice(device_) != cudaSuccess) return;
  for (auto& [cls, ptrs] : blocks) {
    for (void* p : ptrs) (void)cudaFree(p);
  }
}

size_t DeviceAllocator::bytes_in_use() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_use_;
}

size_t DeviceAllocator::bytes_cached() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_;
}

}  // namespace muninn::cuda
