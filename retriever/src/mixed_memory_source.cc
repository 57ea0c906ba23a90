#include "muninn/retriever/mixed_memory_source.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace muninn::retriever {

StatusOr<MixPlan> InterleavePlan(int64_t n_first, int64_t n_second, int64_t every) {
  if (every < 1) return InvalidArgumentError("mixed data: one block of the second kind needs every >= 1 of the first");
  if (n_first < 1 || n_second < 0) return InvalidArgumentError("mixed data: the first source has no block");
  MixPlan p;
  int64_t a = 0, b = 0;
  while (a < n_first) {
    for (int64_t k = 0; k < every && a < n_first; ++k) {
      p.source.push_back(0);
      p.index.push_back(a++);
    }
    if (n_second > 0) {
      p.source.push_back(1);
      p.index.push_back(b++ % n_second);
    }
  }
  return p;
}

MixedMemorySource::MixedMemorySource(model::TrainMemorySource* first,
                                     model::TrainMemorySource* second, MixPlan plan)
    : sources_{first, second}, plan_(std::move(plan)) {}

StatusOr<std::unique_ptr<MixedMemorySource>> MixedMemorySource::Create(
    model::TrainMemorySource* first, model::TrainMemorySource* second, MixPlan plan) {
  if (first == nullptr || second == nullptr) return InvalidArgumentError("mixed memory needs two sources");
  if (plan.source.size() != plan.index.size() || plan.source.empty()) {
    return InvalidArgumentError("mixed memory: an empty or malformed plan");
  }
  for (uint8_t s : plan.source) {
    if (s > 1) return InvalidArgumentError("mixed memory: a plan names a third source");
  }
  return std::unique_ptr<MixedMemorySource>(new MixedMemorySource(first, second, std::move(plan)));
}

StatusOr<std::pair<model::TrainMemorySource*, int64_t>> MixedMemorySource::Route(
    model::TrainUse use, int64_t block) const {
  if (use == model::TrainUse::kEval) return std::make_pair(sources_[0], block);
  if (block < 0 || block >= plan_.size()) {
    return OutOfRangeError("mixed memory: no block " + std::to_string(block));
  }
  const size_t i = static_cast<size_t>(block);
  return std::make_pair(sources_[plan_.source[i]], plan_.index[i]);
}

StatusOr<const model::MemoryKV*> MixedMemorySource::Before(model::TrainUse use, int32_t stream,
                                                           int64_t block, int64_t step) {
  ASSIGN_OR_RETURN(auto r, Route(use, block));
  return r.first->Before(use, stream, r.second, step);
}

Status MixedMemorySource::After(model::TrainUse use, int32_t stream, int64_t block) {
  ASSIGN_OR_RETURN(auto r, Route(use, block));
  return r.first->After(use, stream, r.second);
}

Status MixedMemorySource::Restore(std::span<const model::TrainStreamPosition> streams,
                                  int64_t step) {
  // The source-s block at or after combined block i (-1: none).
  auto next_of = [this](int s, int64_t i) -> int64_t {
    for (; i < plan_.size(); ++i) {
      if (plan_.source[static_cast<size_t>(i)] == s) return plan_.index[static_cast<size_t>(i)];
    }
    return -1;
  };
  for (int s = 0; s < 2; ++s) {
    std::vector<model::TrainStreamPosition> mine;
    for (const model::TrainStreamPosition& p : streams) {
      if (p.first_block < 0 || p.next_block < p.first_block || p.next_block >= plan_.size()) {
        return OutOfRangeError("mixed memory: stream " + std::to_string(p.stream) +
                               " positions outside the data");
      }
      const int64_t first = next_of(s, p.first_block);
      if (first < 0) continue;  // no block of source s from this stream's start on
      const int64_t next = next_of(s, p.next_block);
      // A source that has come round to its start again (the plan cycles the second) replays
      // nothing: its reads are of positions written in the first round.
      mine.push_back({p.stream, first, next >= first ? next : first});
    }
    RETURN_IF_ERROR(sources_[s]->Restore(mine, step));
  }
  return Status::Ok();
}

std::string MixedMemorySource::Describe() const {
  return nlohmann::json{{"kind", "mixed"},
                        {"first", sources_[0]->Describe()},
                        {"second", sources_[1]->Describe()},
                        {"blocks", plan_.size()},
                        {"second_blocks", std::count(plan_.source.begin(), plan_.source.end(), 1)}}
      .dump();
}

}  // namespace muninn::retriever
