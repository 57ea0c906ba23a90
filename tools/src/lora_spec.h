// Private to tools/: the `--lora PATH[:SCALE]` argument (generate, logits, lora merge and every
// long-context command through RuntimeFlags) and the config key "lora", and applying one to a
// loaded model.
#pragma once

#include <cstdlib>
#include <functional>
#include <memory>
#include <string>

#include "muninn/core/status.h"
#include "muninn/model/model_loader.h"

namespace muninn::tools {

struct LoraSpec {
  std::string path;  // a PEFT LoRA folder; empty: no adapter
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

// `base` (a model on the host) with the PEFT folder `spec.path` merged into its weights
// (W + scale·(α/r)·B·A, lora_merge.h). NotFound when the folder or its files are missing,
// InvalidArgument for a non-finite scale or an adapter that does not fit the model (other shapes,
// layers, targets), each naming the folder.
StatusOr<std::unique_ptr<model::Model>> MergeLoraSpec(const LoraSpec& spec,
                                                      const model::Model& base);

// The LoadModelOptions::on_host step that merges `spec` (empty when spec.path is: no adapter).
// The merge runs on the host before the weights go to the backend, so an adapter works with
// every --device.
std::function<StatusOr<std::unique_ptr<model::Model>>(const model::Model&)> LoraOnHost(
    const LoraSpec& spec);

}  // namespace muninn::tools
