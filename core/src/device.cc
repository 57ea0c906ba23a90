#include "muninn/core/device.h"

namespace muninn {

std::string Device::ToString() const {
  if (type == DeviceType::kCpu) return "cpu";
  return "cuda:" + std::to_string(index);
}

}  // namespace muninn
