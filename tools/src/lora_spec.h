// Private to tools/: the `--lora PATH[:SCALE]` argument (generate, logits, lora merge and every
// long-context command through RuntimeFlags) and the config key "lora", and applying one to a
// loaded model.
#pragma once

#include <cstdlib>
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

// Merges the PEFT folder `spec.path` into `lm`'s weights (W + scale·(α/r)·B·A, lora_merge.h),
// replacing lm->model; a no-op when the path is empty. NotFound when the folder or its files are
// missing, InvalidArgument for a non-finite scale or an adapter that does not fit the model
// (other shapes, layers, targets), each naming the folder.
Status ApplyLora(const LoraSpec& spec, model::LoadedModel* lm);

}  // namespace muninn::tools
