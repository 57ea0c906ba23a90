#include "device_backend.h"

#include <charconv>
#include <cstdlib>
#include <string>
#include <string_view>

#if defined(MUNINN_HAVE_CUDA)
#include "muninn/core/cuda_backend.h"
#endif

namespace muninn::tools {

std::string DeviceForRank(const std::string& device, int rank, int world) {
  if (device != "cuda" || world <= 1) return device;
#if defined(MUNINN_HAVE_CUDA)
  const int count = CudaDeviceCount();
  if (count > 1) return "cuda:" + std::to_string(rank % count);
#else
  (void)rank;
#endif
  return device;
}

StatusOr<std::unique_ptr<Backend>> CreateBackendForDevice(const std::string& device,
                                                          const CpuBackendOptions& cpu) {
  if (device.empty() || device == "cpu") return CreateCpuBackend(cpu);
  if (device != "cuda" && device.rfind("cuda:", 0) != 0) {
    return InvalidArgumentError("unknown device '" + device + "'; use cpu, cuda or cuda:N");
  }
  int ordinal = 0;
  if (device != "cuda") {
    const char* first = device.data() + 5;
    const char* last = device.data() + device.size();
    const auto [end, ec] = std::from_chars(first, last, ordinal);
    if (ec != std::errc() || end != last || first == last || ordinal < 0) {
      return InvalidArgumentError("bad CUDA device '" + device + "'; use cuda or cuda:N, N >= 0");
    }
  }
#if defined(MUNINN_HAVE_CUDA)
  CudaBackendOptions o;
  o.device = ordinal;
  // An A/B switch for measurements: the model's plain ops instead of the fused decode ops.
  if (const char* fused = std::getenv("MUNINN_CUDA_FUSED_DECODE"); fused != nullptr) {
    o.fused_decode_ops = std::string_view(fused) != "0";
  }
  return CreateCudaBackend(o);
#else
  return FailedPreconditionError("--device " + device +
                                 ": this muninn was built without the CUDA backend "
                                 "(configure with -DMUNINN_CUDA=ON and the CUDA Toolkit)");
#endif
}

}  // namespace muninn::tools
