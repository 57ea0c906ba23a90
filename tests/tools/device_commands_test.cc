// --device on the long-context commands (ingest, ask, summarize, eval passkey/needle/perplexity):
// without a GPU each fails with the backend's UNAVAILABLE message (a build without MUNINN_CUDA:
// FAILED_PRECONDITION) and a non-zero exit, never a crash, with or without --lora (merged on the
// host at load).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/tools/run_cli.h"
#if defined(MUNINN_HAVE_CUDA)
#include "muninn/core/cuda_backend.h"
#endif

namespace muninn::tools {
namespace {

using testing::RunCli;

class DeviceCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
#if defined(MUNINN_HAVE_CUDA)
    if (CudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present: --device cuda would run";
#endif
    dir_ = (std::filesystem::temp_directory_path() /
            ("muninn_device_cmd_" + std::to_string(::getpid())))
               .string();
    std::filesystem::create_directories(dir_);
    file_ = dir_ + "/doc.txt";
    std::ofstream(file_) << "A short document about ravens.\n";
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  // Runs the CLI; returns the exit code, stderr in *err.
  int Run(std::vector<std::string> args, std::string* err) {
    std::string out;
    ::testing::internal::CaptureStderr();
    const int rc = RunCli(std::move(args), &out);
    *err = ::testing::internal::GetCapturedStderr();
    return rc;
  }
  std::string dir_, file_;
};

TEST_F(DeviceCommandsTest, CudaWithoutADeviceIsAClearError) {
  const std::vector<std::vector<std::string>> commands = {
      {"ingest", file_, "--bank", dir_ + "/bank"},
      {"ingest", file_, "--bank", dir_ + "/bank", "--gpu-layers", "4"},
      {"ask", "What about ravens?", "--bank", dir_ + "/bank"},
      {"summarize", file_},
      {"eval", "passkey", "--lengths", "256", "--trials", "1"},
      {"eval", "needle", "--lengths", "256", "--trials", "1"},
      {"eval", "perplexity", "--text", file_},
      {"eval", "diagnose", "heads", "--length", "256"},
      {"eval", "diagnose", "attention", "--length", "256"},
  };
  for (std::vector<std::string> args : commands) {
    const std::string what =
        args[0] + (args[0] == "eval" ? " " + args[1] : "") + (args[1] == "diagnose" ? " " + args[2] : "");
    args.insert(args.end(), {"--device", "cuda", "--embedder", "hidden"});
    std::string err;
    const int rc = Run(args, &err);
    EXPECT_NE(rc, 0) << what;
#if defined(MUNINN_HAVE_CUDA)
    EXPECT_NE(err.find("UNAVAILABLE: no CUDA device"), std::string::npos) << what << ": " << err;
#else
    EXPECT_NE(err.find("FAILED_PRECONDITION"), std::string::npos) << what << ": " << err;
#endif
  }
}

TEST_F(DeviceCommandsTest, UnknownDeviceIsAnInvalidArgument) {
  std::string err;
  EXPECT_EQ(Run({"ingest", file_, "--bank", dir_ + "/bank", "--device", "gpu"}, &err), 2);
  EXPECT_NE(err.find("unknown device 'gpu'"), std::string::npos) << err;
}

// --lora with a device is no longer refused: the adapter is merged on the host at load, so these
// commands get as far as the device (none here) like any other.
TEST_F(DeviceCommandsTest, LoraWithADeviceGoesToTheDevice) {
  const std::vector<std::vector<std::string>> commands = {
      {"ingest", file_, "--bank", dir_ + "/bank", "--embedder", "hidden"},
      {"generate", "-p", "ravens", "-n", "2"},
      {"logits", "-p", "ravens"},
      // The device is opened before the model is looked for: a missing one is the first error.
      {"generate", "-p", "ravens", "-n", "2", "-m", dir_ + "/no-such-model.gguf"},
  };
  for (std::vector<std::string> args : commands) {
    args.insert(args.end(), {"--device", "cuda", "--lora", dir_});
    std::string err;
    EXPECT_NE(Run(args, &err), 0) << args[0];
    EXPECT_EQ(err.find("CPU backend only"), std::string::npos) << args[0] << ": " << err;
#if defined(MUNINN_HAVE_CUDA)
    EXPECT_NE(err.find("UNAVAILABLE: no CUDA device"), std::string::npos) << args[0] << ": " << err;
#else
    EXPECT_NE(err.find("FAILED_PRECONDITION"), std::string::npos) << args[0] << ": " << err;
#endif
  }
}

// `muninn train --device` puts the trainer on the device (TrainModel with the backend's TrainOps),
// for plain language modelling and with memory in the loop; without a GPU both stop at the device.
TEST_F(DeviceCommandsTest, TrainGoesToTheDevice) {
  const std::string config = std::string(MUNINN_SOURCE_DIR) + "/configs/smollm2-135m-memlong.json";
  const std::vector<std::vector<std::string>> commands = {
      {"train", "-d", file_, "-o", dir_ + "/out", "--steps", "1", "--block", "16"},
      {"train", "--memory", "--config", config, "-d", file_, "-o", dir_ + "/out", "--steps", "1"},
      {"train", "-d", file_, "-o", dir_ + "/out", "-m", dir_ + "/no-such-model.gguf"},
      {"train", "-d", file_, "-o", dir_ + "/out", "--ngl", "20"},
  };
  for (std::vector<std::string> args : commands) {
    args.insert(args.end(), {"--device", "cuda"});
    std::string err;
    EXPECT_NE(Run(args, &err), 0) << args[1];
    EXPECT_EQ(err.find("CPU backend only"), std::string::npos) << err;
#if defined(MUNINN_HAVE_CUDA)
    EXPECT_NE(err.find("UNAVAILABLE: no CUDA device"), std::string::npos) << args[1] << ": " << err;
#else
    EXPECT_NE(err.find("FAILED_PRECONDITION"), std::string::npos) << args[1] << ": " << err;
#endif
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/out/adapter"));
}

}  // namespace
}  // namespace muninn::tools
