// The source tree the tests read their data from: $MUNINN_HOME when set (ctest sets it; a test
// binary carried to another machine, e.g. a GPU machine without a build, runs from a checkout
// whose path differs from the build's), else the tree the binary was built from.
#pragma once

#include <cstdlib>
#include <string>

namespace muninn::testing {

inline std::string SourceDir() {
  const char* home = std::getenv("MUNINN_HOME");
  return home != nullptr && *home != '\0' ? std::string(home) : std::string(MUNINN_SOURCE_DIR);
}

}  // namespace muninn::testing
