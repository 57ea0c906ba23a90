// TrainMemorySource: where a training run's retrieved memory comes from (issue 12, MemLong's
// protocol, specs/training.md). The Trainer asks it for the memory K/V of every block before the
// block's forward/backward and tells it when the block is done, so a source can keep a bank per
// data stream (retrieve before, write after) or build each synthetic example's memory. Memory is
// a constant of the step (detached): no gradient flows into it.
//
// model/ never includes memory/ or retriever/: the implementations live above (retriever/,
// train_memory_source.h); the trainer only sees MemoryKV views.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "muninn/core/status.h"
#include "muninn/model/memory_kv.h"

namespace muninn::model {

// Which data a block comes from.
enum class TrainUse : uint8_t { kTrain, kEval };

// One data stream a process runs (trainer.h: the data cut into contiguous streams, one or more
// per MPI rank): its first block and the block it reads next (global block indices).
struct TrainStreamPosition {
  int32_t stream = 0;
  int64_t first_block = 0;
  int64_t next_block = 0;
};

class TrainMemorySource {
 public:
  virtual ~TrainMemorySource() = default;

  // Memory for block `block` (global index) of data stream `stream` of the training (kTrain) or
  // held-out (kEval, always stream 0) data, read at optimizer step `step` (0-based: the step
  // being computed). Null: the block reads no memory. The pointer and its tensors stay valid
  // until the next call. A source must give a stream's block the same memory whichever process
  // runs the stream (MPI ranks each hold their own streams): what a block reads may depend on its
  // own stream's earlier blocks only.
  virtual StatusOr<const MemoryKV*> Before(TrainUse use, int32_t stream, int64_t block,
                                           int64_t step) = 0;
  // The block's forward/backward (or evaluation loss) is done: e.g. write it into its stream's
  // bank. Called once after every Before.
  virtual Status After(TrainUse use, int32_t stream, int64_t block) = 0;
  // Called once before the first step a Trainer runs, with the streams this process runs and the
  // step it starts from (each stream at its first block and step 0 for a fresh run; the
  // checkpoint's positions for a resumed one): a source with state rebuilds what an
  // uninterrupted run would hold there.
  virtual Status Restore(std::span<const TrainStreamPosition> streams, int64_t step) = 0;
  // The source's settings as one line of JSON, part of the checkpoint's run description (a resume
  // with other memory settings is refused).
  virtual std::string Describe() const = 0;
};

}  // namespace muninn::model
