// Buffer: a block of bytes on one device, owned by whoever holds the last shared_ptr to it.
//
// Host buffers are 64-byte aligned. A buffer may also wrap memory owned by something else (an
// mmap'd file, a caller's array) and keep that owner alive. Thread-compatible: the bytes are
// not synchronised; callers order their reads and writes.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "muninn/core/device.h"
#include "muninn/core/status.h"

namespace muninn {

class Buffer {
 public:
  virtual ~Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  // Host-addressable only when device().is_cpu(); a device pointer otherwise.
  void* data() const { return data_; }
  size_t size() const { return size_; }
  Device device() const { return device_; }

 protected:
  Buffer(void* data, size_t size, Device device) : data_(data), size_(size), device_(device) {}

 private:
  void* data_;
  size_t size_;
  Device device_;
};

// Allocates `bytes` of 64-byte-aligned host memory (uninitialised, or zeroed when `zero`).
// ResourceExhausted if the allocation fails.
StatusOr<std::shared_ptr<Buffer>> AllocateHostBuffer(size_t bytes, bool zero = false);

// Wraps host memory owned elsewhere; `keep_alive` (may be null) is held until the buffer dies.
std::shared_ptr<Buffer> WrapHostMemory(void* data, size_t bytes, std::shared_ptr<const void> keep_alive);

}  // namespace muninn
