// Private to the CUDA backend: device memory with an RAII owner and a cache of freed blocks.
//
// Sizes are rounded up to a size class (256 B granules below 1 MiB, 1 MiB granules above); a
// freed block goes to its class's free list and the next request of that class reuses it without
// cudaMalloc. When cudaMalloc fails the cache is returned to the driver and the call retried once.
// Reuse is safe without events because every kernel and copy of the owning backend runs on its
// one stream: work queued after a block's reuse runs after all work queued before its release.
//
// Thread-safe (buffers may die on any thread). Held by shared_ptr: buffers keep it alive, so a
// buffer may outlive its backend.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "muninn/core/buffer.h"
#include "muninn/core/status.h"

namespace muninn::cuda {

class DeviceAllocator : public std::enable_shared_from_this<DeviceAllocator> {
 public:
  explicit DeviceAllocator(int device) : device_(device) {}
  ~DeviceAllocator();
  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;

  // A device buffer of at least `bytes` (uninitialised). ResourceExhausted when the device is out
  // of memory even after the cache was released.
  StatusOr<std::shared_ptr<Buffer>> Allocate(size_t bytes);

  // Returns every cached block to the driver.
  void ReleaseCache();

  size_t bytes_in_use() const;
  size_t bytes_cached() const;

  static size_t SizeClass(size_t bytes);

 private:
  friend class DeviceBuffer;
  void Release(void* ptr, size_t size_class);

  const int device_;
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;  // size class -> cached blocks
  size_t in_use_ = 0;
  size_t cached_ = 0;
};

}  // namespace muninn::cuda
