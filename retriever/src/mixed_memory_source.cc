#include "muninn/retriever/mixed_memory_source.h"

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
    if (b < n_second) {
      p.source.push_back(1);
      p.index.push_back(b++);
    }
  }
  return p;
}

MixedMemorySource::MixedMemorySource(model::TrainMemorySource* first,
                                     model::TrainMemorySource* second, MixPlan plan)
    : sources_{first, second}, plan_(std::move(plan)) {
  for (int s = 0; s < 2; ++s) {
    before_[s].assign(static_cast<size_t>(plan_.size()) + 1, 0);
    for (int64_t i = 0; i < plan_.size(); ++i) {
      before_[s][static_cast<size_t>(i) + 1] =
          before_[s][static_cast<size_t>(i)] + (plan_.source[static_cast<size_t>(i)] == s);
    }
  }
}

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
  for (int s = 0; s < 2; ++s) {
    std::vector<model::TrainStreamPosition> mine;
    for (const model::TrainStreamPosition& p : streams) {
      if (p.first_block < 0 || p.next_block < p.first_block || p.next_block >= plan_.size()) {
        return OutOfRangeError("mixed memory: stream " + std::to_string(p.stream) +
                               " positions outside the data");
      }
      const int64_t first = before_[s][static_cast<size_t>(p.first_block)];
      const int64_t next = before_[s][static_cast<size_t>(p.next_block)];
      const int64_t total = before_[s].back();
      if (first >= total) continue;  // this stream holds no block of source s
      mine.push_back({p.stream, first, next < total ? next : first});
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
                        {"second_blocks", before_[1].back()}}
      .dump();
}

}  // namespace muninn::retriever
