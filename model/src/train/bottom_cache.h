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
// counts as `rejected` and is recomputed and rewritten. Files are written with WriteFileAtomic
// (per-process temporary name, not synced: an entry that does not check out is recomputed), so
// processes (MPI ranks) may share the folder. Not thread-safe: one per TrainModel.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/model/model.h"
#include "muninn/model/train_model.h"

namespace muninn::model::train {

class BottomCache {
 public:
  // Creates `dir` if needed; fingerprints `model` for the bottom [0, first_layer).
  static StatusOr<BottomCache> Open(const std::string& dir, const Model& model,
                                    int32_t first_layer);

  // The cached output for (start_pos, ids) into `h` ([T * n_embd]); false when there is none that
  // checks out (then `h` is unspecified).
  bool Read(int64_t start_pos, std::span<const TokenId> ids, std::vector<float>* h);
  // Stores `h` ([T * n_embd]) for (start_pos, ids). A failure (disk full, folder gone) is counted
  // in stats().write_errors, the first one's message kept, and returned.
  Status Write(int64_t start_pos, std::span<const TokenId> ids, std::span<const float> h);
  // Counts a block that is not cacheable (its frozen layers read memory).
  void CountSkipped() { ++stats_.skipped; }

  const BottomCacheCounts& stats() const { return stats_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string PathOf(int64_t start_pos, std::span<const TokenId> ids) const;

  std::string dir_;
  int64_t n_embd_ = 0;
  uint64_t fingerprint_ = 0;  // the model's
  BottomCacheCounts stats_;
};

}  // namespace muninn::model::train
