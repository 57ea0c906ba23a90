// Device: where a buffer lives. The CPU is device {kCpu, 0}; CUDA devices are {kCuda, ordinal}.
#pragma once

#include <string>

namespace muninn {

enum class DeviceType : uint8_t { kCpu = 0, kCuda = 1 };

struct Device {
  DeviceType type = DeviceType::kCpu;
  int index = 0;

  static Device Cpu() { return Device{}; }
  static Device Cuda(int ordinal) { return Device{DeviceType::kCuda, ordinal}; }
  bool is_cpu() const { return type == DeviceType::kCpu; }
  std::string ToString() const;
  friend bool operator==(const Device&, const Device&) = default;
};

}  // namespace muninn
