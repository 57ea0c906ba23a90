#include "muninn/core/buffer.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace muninn {
namespace {

class HostBuffer final : public Buffer {
 public:
  HostBuffer(void* data, size_t size) : Buffer(data, size, Device::Cpu()) {}
  ~HostBuffer() override { std::free(data()); }
};

class WrappedBuffer final : public Buffer {
 public:
  WrappedBuffer(void* data, size_t size, std::shared_ptr<const void> keep_alive)
      : Buffer(data, size, Device::Cpu()), keep_alive_(std::move(keep_alive)) {}

 private:
  std::shared_ptr<const void> keep_alive_;
};

constexpr size_t kAlignment = 64;

}  // namespace

StatusOr<std::shared_ptr<Buffer>> AllocateHostBuffer(size_t bytes, bool zero) {
  // aligned_alloc wants a multiple of the alignment; allocate at least one line.
  size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (rounded < bytes) return ResourceExhaustedError("buffer size overflows");
  if (rounded == 0) rounded = kAlignment;
  void* p = std::aligned_alloc(kAlignment, rounded);
  if (p == nullptr) {
    return ResourceExhaustedError("cannot allocate " + std::to_string(bytes) + " bytes of host memory");
  }
  if (zero) std::memset(p, 0, rounded);
  return std::shared_ptr<Buffer>(std::make_shared<HostBuffer>(p, bytes));
}

std::shared_ptr<Buffer> WrapHostMemory(void* data, size_t bytes,
                                       std::shared_ptr<const void> keep_alive) {
  return std::make_shared<WrappedBuffer>(data, bytes, std::move(keep_alive));
}

}  // namespace muninn
