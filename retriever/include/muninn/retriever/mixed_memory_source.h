// MixedMemorySource: two training memory sources behind one block list (issue 12;
// specs/memory_modes.md §4 (b): synthetic recall tasks mixed with ordinary long-text language
// modelling, so an adapter that learns to read memory keeps the model's language). A MixPlan says
// which source each block of the combined data comes from and its index there; the plan keeps
// each source's blocks in their own order, so a stream protocol (stream_memory_source.h) still
// sees its blocks in order. Held-out blocks belong to the first source.
//
// Restore maps every stream's positions to each source's own block indices (that source's first
// blocks at or after the stream's first and next combined blocks). Exact until a source comes
// round to its first block again.
//
// Thread-compatible; the sources are not owned.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/model/train_memory.h"

namespace muninn::retriever {

struct MixPlan {
  std::vector<uint8_t> source;  // [n] 0: the first source, 1: the second
  std::vector<int64_t> index;   // [n] the block's index in its source
  int64_t size() const { return static_cast<int64_t>(source.size()); }
};

// `every` blocks of the first source, then one of the second, and so on until the first runs
// out; the second's blocks go in order and start again from its first when they run out.
// every < 1 or n_first < 1: InvalidArgument.
StatusOr<MixPlan> InterleavePlan(int64_t n_first, int64_t n_second, int64_t every);

class MixedMemorySource : public model::TrainMemorySource {
 public:
  static StatusOr<std::unique_ptr<MixedMemorySource>> Create(model::TrainMemorySource* first,
                                                             model::TrainMemorySource* second,
                                                             MixPlan plan);

  StatusOr<const model::MemoryKV*> Before(model::TrainUse use, int32_t stream, int64_t block,
                                          int64_t step) override;
  Status After(model::TrainUse use, int32_t stream, int64_t block) override;
  Status Restore(std::span<const model::TrainStreamPosition> streams, int64_t step) override;
  std::string Describe() const override;

 private:
  MixedMemorySource(model::TrainMemorySource* first, model::TrainMemorySource* second, MixPlan plan);
  // The source and its block index for combined training block `block`.
  StatusOr<std::pair<model::TrainMemorySource*, int64_t>> Route(model::TrainUse use, int64_t block) const;

  model::TrainMemorySource* sources_[2];
  MixPlan plan_;
};

}  // namespace muninn::retriever
