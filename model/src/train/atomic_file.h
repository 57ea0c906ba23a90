// Crash-safe file replacement for training outputs (checkpoints, adapters): the bytes go to
// `path`.tmp, which is flushed to disk (fsync) and renamed over `path`, then the directory is
// synced, so a reader (or a run resumed after SIGKILL or a power cut) sees either the old file or
// the new one, never a torn write.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "muninn/core/status.h"

namespace muninn::model::train {

Status WriteFileAtomic(const std::string& path, std::span<const uint8_t> bytes);

}  // namespace muninn::model::train
