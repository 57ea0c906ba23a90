// Eviction planning: pure functions from the bank's chunks (oldest first) to the ids to delete.
// MemLong spec §10: the paper's retrieval-frequency policy and the released code's FIFO-half.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "muninn/memory/memory_bank_options.h"

namespace muninn::memory::internal {

struct EvictionCandidate {
  uint64_t id = 0;  // ascending id == oldest first
  int64_t n_tokens = 0;
  int64_t bytes = 0;
  uint32_t retrieval_count = 0;
};

// One round of the frequency policy over `by_age` (ascending id): the oldest lower_percent are
// deleted, the newest (100 - upper_percent) are protected, and middle-band chunks go in
// ascending retrieval count (ties oldest first, or whole tie groups) until at least
// target_fraction of all chunks are deleted. Returns ids, ascending.
std::vector<uint64_t> PlanFrequencyRound(std::span<const EvictionCandidate> by_age,
                                         const FrequencyEvictionParams& params);

// Usage limits for a plan: 0 means unlimited.
struct Capacity {
  int64_t tokens = 0;
  int64_t bytes = 0;
};

// Plans the deletions needed before adding `add_tokens` / `add_bytes` to a bank holding `by_age`
// (ascending id), under `policy`. Empty when everything fits. ResourceExhausted when the addition
// alone exceeds the capacity or the policy is kNone and the bank is full.
StatusOr<std::vector<uint64_t>> PlanEviction(std::span<const EvictionCandidate> by_age,
                                             Capacity capacity, int64_t add_tokens,
                                             int64_t add_bytes, EvictionPolicy policy,
                                             const FrequencyEvictionParams& params);

}  // namespace muninn::memory::internal
