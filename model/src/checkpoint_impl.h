// Private: the two Checkpoint implementations, opened by Checkpoint::Open.
#pragma once

#include <memory>
#include <string>

#include "muninn/model/checkpoint.h"

namespace muninn::model::internal {

StatusOr<std::unique_ptr<Checkpoint>> OpenGgufCheckpoint(const std::string& path);
// `path` is a folder, or a .safetensors file whose folder holds config.json.
StatusOr<std::unique_ptr<Checkpoint>> OpenHfCheckpoint(const std::string& path);

}  // namespace muninn::model::internal
