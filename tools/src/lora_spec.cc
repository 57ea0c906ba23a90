#include "lora_spec.h"

#include <cmath>
#include <filesystem>

#include "muninn/model/lora_merge.h"
#include "muninn/model/peft_adapter.h"

namespace muninn::tools {

StatusOr<std::unique_ptr<model::Model>> MergeLoraSpec(const LoraSpec& spec,
                                                      const model::Model& base) {
  const std::string what = "LoRA adapter '" + spec.path + "'";
  if (!std::isfinite(spec.scale)) {
    return InvalidArgumentError(what + ": the scale must be a finite number (PATH[:SCALE])");
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(spec.path, ec)) {
    return NotFoundError(what +
                         " not found: expected a PEFT folder holding adapter_config.json "
                         "and adapter_model.safetensors (e.g. the adapter/ folder `muninn train` "
                         "writes)");
  }
  auto params = model::ReadPeftAdapter(spec.path, base.config(), base.weights());
  if (!params.ok()) return params.status().WithContext("loading the " + what);
  auto merged = model::MergeLora(base, *params, spec.scale);
  if (!merged.ok()) return merged.status().WithContext("merging the " + what);
  return merged;
}

std::function<StatusOr<std::unique_ptr<model::Model>>(const model::Model&)> LoraOnHost(
    const LoraSpec& spec) {
  if (spec.path.empty()) return nullptr;
  return [spec](const model::Model& base) { return MergeLoraSpec(spec, base); };
}

}  // namespace muninn::tools
