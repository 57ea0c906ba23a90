// Crash-safe file replacement for training outputs (checkpoints, adapters, bottom-cache entries):
// the bytes go to `path`.tmp.<pid> (per process, so processes writing the same path — MPI ranks
// sharing a folder — never share a temporary file), which is renamed over `path`, so a reader
// sees either the old file or the new one, never a torn write. Durable writes also flush the file
// (fsync) before the rename and the directory after it, so that holds after a power cut too.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "muninn/core/status.h"

namespace muninn::model::train {

struct AtomicWriteOptions {
  // fsync the file and its directory. Off for files that are checked when read and recomputed
  // when they do not check out (the bottom cache), where syncing would only cost time.
  bool durable = true;
};

// `path` replaced by the concatenation of `pieces`.
Status WriteFileAtomic(const std::string& path, std::span<const std::span<const uint8_t>> pieces,
                       const AtomicWriteOptions& options = {});

// `path` replaced by `bytes`, durably.
Status WriteFileAtomic(const std::string& path, std::span<const uint8_t> bytes);

}  // namespace muninn::model::train
