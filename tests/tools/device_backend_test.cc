// --device: names that select a backend, and the clear errors when the device cannot be had.
#include <gtest/gtest.h>

#include "tools/src/device_backend.h"
#if defined(MUNINN_HAVE_CUDA)
#include "muninn/core/cuda_backend.h"
#endif

namespace muninn::tools {
namespace {

TEST(DeviceBackend, CpuByNameAndByDefault) {
  for (const char* name : {"cpu", ""}) {
    auto be = CreateBackendForDevice(name, CpuBackendOptions{});
    ASSERT_TRUE(be.ok()) << be.status();
    EXPECT_TRUE((*be)->device().is_cpu());
  }
}

TEST(DeviceBackend, RejectsUnknownNames) {
  for (const char* name : {"gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:1x", "CPU"}) {
    EXPECT_EQ(CreateBackendForDevice(name, CpuBackendOptions{}).status().code(),
              StatusCode::kInvalidArgument)
        << name;
  }
}

TEST(DeviceBackend, CudaWithoutDeviceOrBuildIsAClearError) {
  auto be = CreateBackendForDevice("cuda", CpuBackendOptions{});
#if defined(MUNINN_HAVE_CUDA)
  if (CudaDeviceCount() > 0) {
    ASSERT_TRUE(be.ok()) << be.status();
    EXPECT_EQ((*be)->device(), Device::Cuda(0));
    return;
  }
  ASSERT_FALSE(be.ok());
  EXPECT_EQ(be.status().code(), StatusCode::kUnavailable) << be.status();
  EXPECT_NE(be.status().message().find("no CUDA device"), std::string_view::npos) << be.status();
#else
  ASSERT_FALSE(be.ok());
  EXPECT_EQ(be.status().code(), StatusCode::kFailedPrecondition) << be.status();
#endif
}

// Data-parallel training: `cuda` spreads the ranks over the GPUs; a named device, the CPU and a
// single process are left alone.
TEST(DeviceBackend, RanksGetTheirOwnGpu) {
  EXPECT_EQ(DeviceForRank("cpu", 1, 4), "cpu");
  EXPECT_EQ(DeviceForRank("cuda:1", 3, 4), "cuda:1");
  EXPECT_EQ(DeviceForRank("cuda", 3, 1), "cuda");
  int gpus = 0;
#if defined(MUNINN_HAVE_CUDA)
  gpus = CudaDeviceCount();
#endif
  if (gpus > 1) {
    EXPECT_EQ(DeviceForRank("cuda", 3, 4), "cuda:" + std::to_string(3 % gpus));
    EXPECT_EQ(DeviceForRank("cuda", 0, 4), "cuda:0");
  } else {
    EXPECT_EQ(DeviceForRank("cuda", 3, 4), "cuda");  // one GPU (shared) or none (a clear error)
  }
}

}  // namespace
}  // namespace muninn::tools
