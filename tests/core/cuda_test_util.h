// The CUDA backend for the `gpu` tests of tests/core, or the reason there is none.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "muninn/core/backend.h"
#if defined(MUNINN_HAVE_CUDA)
#include "muninn/core/cuda_backend.h"
#endif

namespace muninn::testing {

// The CUDA backend, or null with `why` set when this process has none (the caller skips, saying
// why). A device that exists but cannot be opened is a test failure.
inline std::unique_ptr<Backend> CudaBackendOrNull(std::string* why) {
#if defined(MUNINN_HAVE_CUDA)
  if (CudaDeviceCount() == 0) {
    *why = "no CUDA device present: " + CreateCudaBackend({}).status().ToString();
    return nullptr;
  }
  auto be = CreateCudaBackend({});
  EXPECT_TRUE(be.ok()) << be.status();
  if (!be.ok()) {
    *why = "CreateCudaBackend failed: " + be.status().ToString();
    return nullptr;
  }
  return std::move(be).value();
#else
  *why = "muninn was built with MUNINN_CUDA=OFF: no CUDA backend to test";
  return nullptr;
#endif
}

}  // namespace muninn::testing
