#include "muninn/memory/memory_bank_options.h"

#include <string>

namespace muninn::memory {

std::string_view EvictionPolicyName(EvictionPolicy p) {
  switch (p) {
    case EvictionPolicy::kNone: return "none";
    case EvictionPolicy::kFrequency: return "frequency";
    case EvictionPolicy::kFifoHalf: return "fifo_half";
  }
  return "unknown";
}

bool ParseEvictionPolicy(std::string_view name, EvictionPolicy* out) {
  for (EvictionPolicy p :
       {EvictionPolicy::kNone, EvictionPolicy::kFrequency, EvictionPolicy::kFifoHalf}) {
    if (name == EvictionPolicyName(p)) {
      *out = p;
      return true;
    }
  }
  return false;
}

Status MemoryBankOptions::Validate() const {
  if (!in_memory && path.empty()) {
    return InvalidArgumentError("memory bank options: set `path` (or in_memory for tests)");
  }
  if (dim < 0 || n_head_kv < 0 || head_dim < 0 || state_dim < 0 || state_dim > (1 << 20)) {
    return InvalidArgumentError(
        "memory bank options: dim, n_head_kv, head_dim and state_dim must be >= 0");
  }
  for (size_t i = 0; i < kv_layers.size(); ++i) {
    if (kv_layers[i] < 0 || (i > 0 && kv_layers[i] <= kv_layers[i - 1])) {
      return InvalidArgumentError(
          "memory bank options: kv_layers must be distinct layer indices >= 0 in ascending order");
    }
  }
  if (kv_layers.size() > 4096) {
    return InvalidArgumentError("memory bank options: at most 4096 kv_layers");
  }
  if (kv_dtype != DType::kCount && kv_dtype != DType::kF16 && kv_dtype != DType::kBF16 &&
      kv_dtype != DType::kQ8_0) {
    return InvalidArgumentError("memory bank options: kv_dtype must be f16, bf16 or q8_0, not " +
                                std::string(DTypeName(kv_dtype)));
  }
  if (capacity_tokens < 0 || capacity_bytes < 0) {
    return InvalidArgumentError("memory bank options: capacities must be >= 0 (0 = unlimited)");
  }
  if (frequency.lower_percent < 0 || frequency.upper_percent > 100 ||
      frequency.lower_percent > frequency.upper_percent) {
    return InvalidArgumentError("memory bank options: need 0 <= lower_percent <= upper_percent "
                                "<= 100 for frequency eviction");
  }
  if (!(frequency.target_fraction > 0.0 && frequency.target_fraction <= 1.0)) {
    return InvalidArgumentError("memory bank options: frequency target_fraction must be in (0, 1]");
  }
  if (index_persist_interval < 1 || overfetch_factor < 1 || hnsw_ef_search < 0 ||
      train_min_chunks < 1) {
    return InvalidArgumentError("memory bank options: index_persist_interval, overfetch_factor "
                                "and train_min_chunks must be >= 1, hnsw_ef_search >= 0");
  }
  if (!(max_tombstone_fraction > 0.0 && max_tombstone_fraction <= 1.0)) {
    return InvalidArgumentError("memory bank options: max_tombstone_fraction must be in (0, 1]");
  }
  return Status::Ok();
}

}  // namespace muninn::memory
