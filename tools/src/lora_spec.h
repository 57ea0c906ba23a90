// Private to tools/: the `--lora PATH[:SCALE]` argument of generate, logits and lora merge.
#pragma once

#include <cstdlib>
#include <string>

namespace muninn::tools {

struct LoraSpec {
  std::string path;
  float scale = 1.0f;
};

// "DIR" or "DIR:0.5": a trailing ":number" is the scale (a path may itself contain ':').
inline LoraSpec ParseLoraSpec(const std::string& spec) {
  LoraSpec s{spec, 1.0f};
  const size_t colon = spec.rfind(':');
  if (colon != std::string::npos && colon + 1 < spec.size()) {
    const std::string tail = spec.substr(colon + 1);
    char* end = nullptr;
    const float v = std::strtof(tail.c_str(), &end);
    if (end != nullptr && *end == '\0') {
      s.path = spec.substr(0, colon);
      s.scale = v;
    }
  }
  return s;
}

}  // namespace muninn::tools
