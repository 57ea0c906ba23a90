// Private to tools/: the backend a `--device` flag names.
#pragma once

#include <memory>
#include <string>

#include "muninn/core/backend.h"
#include "muninn/core/cpu_backend.h"

namespace muninn::tools {

inline constexpr const char* kDeviceHelp =
    "Compute device: cpu, or cuda / cuda:N (weights and KV cache on the GPU; "
    "needs a build with MUNINN_CUDA and an NVIDIA GPU)";

// "cpu" -> the CPU backend with `cpu`; "cuda" or "cuda:N" -> the CUDA backend on device N (0 by
// default). Unavailable ("no CUDA device ...") on a machine without one, FailedPrecondition in a
// build without MUNINN_CUDA, InvalidArgument for any other name.
// The device the process of node-local rank `rank` (of `world` data-parallel processes) uses:
// `cuda` becomes cuda:(rank mod the number of GPUs) when there are several processes and GPUs;
// anything else is returned as is.
std::string DeviceForRank(const std::string& device, int rank, int world);

inline constexpr const char* kGpuLayersHelp =
    "With --device cuda: put only the top N layers (and the output head) on the GPU, the "
    "embeddings and the layers below on the CPU (partial offload, like llama.cpp's -ngl); "
    "-1 = every layer on the GPU";

StatusOr<std::unique_ptr<Backend>> CreateBackendForDevice(const std::string& device,
                                                          const CpuBackendOptions& cpu);

}  // namespace muninn::tools
