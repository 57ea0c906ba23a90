#include "eviction.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace muninn::memory::internal {
namespace {

bool Fits(int64_t tokens, int64_t bytes, Capacity cap) {
  return (cap.tokens == 0 || tokens <= cap.tokens) && (cap.bytes == 0 || bytes <= cap.bytes);
}

}  // namespace

std::vector<uint64_t> PlanFrequencyRound(std::span<const EvictionCandidate> by_age,
                                         const FrequencyEvictionParams& params) {
  const auto n = static_cast<int64_t>(by_age.size());
  if (n == 0) return {};
  const int64_t n_lower = n * params.lower_percent / 100;
  const int64_t n_protect = n * (100 - params.upper_percent) / 100;
  const auto target = std::max<int64_t>(
      1, static_cast<int64_t>(std::ceil(static_cast<double>(n) * params.target_fraction)));
  std::vector<uint64_t> out;
  for (int64_t i = 0; i < n_lower; ++i) out.push_back(by_age[static_cast<size_t>(i)].id);
  std::vector<size_t> middle;
  for (int64_t i = n_lower; i < n - n_protect; ++i) middle.push_back(static_cast<size_t>(i));
  // Ascending count, ties oldest first (index order == age order).
  std::stable_sort(middle.begin(), middle.end(), [&](size_t a, size_t b) {
    return by_age[a].retrieval_count < by_age[b].retrieval_count;
  });
  size_t i = 0;
  while (static_cast<int64_t>(out.size()) < target && i < middle.size()) {
    if (params.whole_tie_groups) {
      const uint32_t c = by_age[middle[i]].retrieval_count;
      while (i < middle.size() && by_age[middle[i]].retrieval_count == c) {
        out.push_back(by_age[middle[i]].id);
        ++i;
      }
    } else {
      out.push_back(by_age[middle[i]].id);
      ++i;
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

StatusOr<std::vector<uint64_t>> PlanEviction(std::span<const EvictionCandidate> by_age,
                                             Capacity capacity, int64_t add_tokens,
                                             int64_t add_bytes, EvictionPolicy policy,
                                             const FrequencyEvictionParams& params) {
  if (!Fits(add_tokens, add_bytes, capacity)) {
    return ResourceExhaustedError("the chunks to append (" + std::to_string(add_tokens) +
                                  " tokens, " + std::to_string(add_bytes) +
                                  " bytes) exceed the bank's capacity on their own; raise "
                                  "capacity_tokens/capacity_bytes or append fewer at a time");
  }
  int64_t tokens = 0, bytes = 0;
  for (const auto& c : by_age) {
    tokens += c.n_tokens;
    bytes += c.bytes;
  }
  if (Fits(tokens + add_tokens, bytes + add_bytes, capacity)) return std::vector<uint64_t>{};
  if (policy == EvictionPolicy::kNone) {
    return ResourceExhaustedError("the memory bank is full (" + std::to_string(tokens) +
                                  " tokens, " + std::to_string(bytes) +
                                  " bytes) and eviction is off");
  }
  std::vector<uint64_t> evicted;
  if (policy == EvictionPolicy::kFifoHalf) {
    // Oldest first until usage is at most half the capacity and the new chunks fit.
    const Capacity half{capacity.tokens / 2, capacity.bytes / 2};
    size_t i = 0;
    while (i < by_age.size() &&
           (!Fits(tokens, bytes, half) || !Fits(tokens + add_tokens, bytes + add_bytes, capacity))) {
      tokens -= by_age[i].n_tokens;
      bytes -= by_age[i].bytes;
      evicted.push_back(by_age[i].id);
      ++i;
    }
    return evicted;
  }
  // Frequency: rounds over the survivors until the new chunks fit.
  std::vector<EvictionCandidate> left(by_age.begin(), by_age.end());
  while (!left.empty() && !Fits(tokens + add_tokens, bytes + add_bytes, capacity)) {
    const std::vector<uint64_t> round = PlanFrequencyRound(left, params);
    std::vector<EvictionCandidate> next;
    size_t r = 0;
    for (const auto& c : left) {
      if (r < round.size() && round[r] == c.id) {
        ++r;
        tokens -= c.n_tokens;
        bytes -= c.bytes;
        evicted.push_back(c.id);
      } else {
        next.push_back(c);
      }
    }
    left.swap(next);
  }
  std::sort(evicted.begin(), evicted.end());
  return evicted;
}

}  // namespace muninn::memory::internal
