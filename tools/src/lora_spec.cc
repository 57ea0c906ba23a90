#include "lora_spec.h"

#include <cmath>
#include <filesystem>

#include "muninn/model/lora_merge.h"
#include "muninn/model/peft_adapter.h"

namespace muninn::tools {

Status ApplyLora(const LoraSpec& spec, model::LoadedModel* lm) {
  if (spec.path.empty()) return Status::Ok();
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
  auto params = model::ReadPeftAdapter(spec.path, lm->model->config(), lm->model->weights());
  if (!params.ok()) return params.status().WithContext("loading the " + what);
  auto merged = model::MergeLora(*lm->model, *params, spec.scale);
  if (!merged.ok()) return merged.status().WithContext("merging the " + what);
  lm->model = std::move(*merged);
  return Status::Ok();
}

}  // namespace muninn::tools
