// Private to the trainer: the frozen bottom's outputs cached on disk (issue 12: "its outputs may be
// cached on disk per corpus").
//
// The layers below the first trained one are frozen and, when none of them reads memory, their
// output for a block depends only on the model and the block (token ids and first position). So
// a run over the same corpus again (a second epoch, a resumed or repeated run, another adapter on
// the same data) can read it from disk instead of recomputing it. An entry is one file
// `DIR/<64-bit key in hex>.bin`: a header (magic, the model's fingerprint, first position, T,
// n_embd, a checksum of the values), the block's ids, and the T x n_embd f32 values exactly as
// computed, so a hit gives bit for bit what the forward gives. The fingerprint hashes the model's
// configuration, the trained-layer boundary, the backend's kernel family, and the bytes of the
// embedding and of every frozen layer's weights (read once when the cache is opened); the key
// hashes it with the block. A file is used only when its fingerprint, position and ids equal the
// block's and its values match their checksum; any other (torn, truncated, a key collision)
// counts as `rejected` and is recomputed and rewritten. Files are written to a per-process
// temporary name and renamed into place, so processes (MPI ranks) may share the folder.
// Not thread-safe: one per TrainModel.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/model/model.h"

namespace muninn::model::train {

struct BottomCacheStats {
  int64_t hits = 0;
  int64_t misses = 0;    // no file: computed and written
  int64_t rejected = 0;  // a file that did not check out: computed and rewritten
};

class BottomCache {
 public:
  // Creates `dir` if needed; fingerprints `model` for the bottom [0, first_layer).
  static StatusOr<BottomCache> Open(const std::string& dir, const Model& model,
                                    int32_t first_layer);

  // The cached output for (start_pos, ids) into `h` ([T * n_embd]); false when there is none that
  // checks out (then `h` is unspecified).
  bool Read(int64_t start_pos, std::span<const TokenId> ids, std::vector<float>* h);
  // Stores `h` ([T * n_embd]) for (start_pos, ids).
  Status Write(int64_t start_pos, std::span<const TokenId> ids, std::span<const float> h);

  const BottomCacheStats& stats() const { return stats_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string PathOf(int64_t start_pos, std::span<const TokenId> ids) const;

  std::string dir_;
  int64_t n_embd_ = 0;
  uint64_t fingerprint_ = 0;  // the model's
  BottomCacheStats stats_;
};

}  // namespace muninn::model::train
