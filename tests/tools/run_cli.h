// Test helper: runs the `muninn` CLI in-process (RunMuninn) with `args` after the program name and
// returns its exit code, with everything it printed on stdout in *out.
#pragma once

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "muninn/tools/commands.h"

namespace muninn::tools::testing {

inline int RunCli(std::vector<std::string> args, std::string* out) {
  args.insert(args.begin(), "muninn");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  ::testing::internal::CaptureStdout();
  const int rc = RunMuninn(static_cast<int>(argv.size()), argv.data());
  *out = ::testing::internal::GetCapturedStdout();
  return rc;
}

}  // namespace muninn::tools::testing
