#include "muninn/model/kv_slot_layout.h"

#include <charconv>

namespace muninn::model {

KvSlotLayout KvSlotLayout::PerLayer(int32_t n_layer) {
  KvSlotLayout l;
  l.n_core = n_layer;
  return l;
}

Status KvSlotLayout::ParseShare(std::string_view text, KvShare* share, int32_t* share_k) {
  if (text == "full" || text == "none" || text.empty()) {
    *share = KvShare::kFull;
    *share_k = 0;
    return Status::Ok();
  }
  std::string_view t = text;
  if (t.substr(0, 9) == "compress-") t.remove_prefix(9);
  if (t.size() >= 2 && (t[0] == 's' || t[0] == 'r')) {
    int32_t k = 0;
    const auto [ptr, ec] = std::from_chars(t.data() + 1, t.data() + t.size(), k);
    if (ec == std::errc() && ptr == t.data() + t.size() && k > 0 && k <= 65536) {
      *share = t[0] == 's' ? KvShare::kCompressS : KvShare::kCompressR;
      *share_k = k;
      return Status::Ok();
    }
  }
  return InvalidArgumentError("KV sharing '" + std::string(text) +
                              "' is not one of full, sK / compress-sK, rK / compress-rK "
                              "(K a positive number of core slots, e.g. s4)");
}

int32_t KvSlotLayout::n_core_slots() const {
  switch (share) {
    case KvShare::kFull: return n_core * max_steps;
    case KvShare::kCompressS: return share_k;
    case KvShare::kCompressR: return (n_core * max_steps + share_k - 1) / share_k;
  }
  return 0;
}

bool KvSlotLayout::SupportsSteps(int32_t steps) const {
  if (steps <= 0) return false;
  return share == KvShare::kCompressS || steps <= max_steps;
}

int32_t KvSlotLayout::Slot(int32_t layer, int32_t iteration) const {
  MUNINN_CHECK(layer >= 0 && layer < n_layer()) << "layer " << layer;
  if (layer < n_prelude) return layer;
  if (layer >= n_prelude + n_core) return n_prelude + n_core_slots() + (layer - n_prelude - n_core);
  MUNINN_CHECK(iteration >= 0 && SupportsSteps(iteration + 1)) << "iteration " << iteration;
  const int32_t c = n_core * iteration + (layer - n_prelude);
  switch (share) {
    case KvShare::kFull: return n_prelude + c;
    case KvShare::kCompressS: return n_prelude + c % share_k;
    case KvShare::kCompressR: return n_prelude + c / share_k;
  }
  return 0;
}

Status KvSlotLayout::Validate() const {
  if (n_prelude < 0 || n_coda < 0 || n_core <= 0 || max_steps <= 0 ||
      (share != KvShare::kFull && share_k <= 0)) {
    return InvalidArgumentError("KV slot layout needs n_core, max_steps > 0 (and K > 0 when "
                                "sharing); got " + ToString() + " with n_core " +
                                std::to_string(n_core) + ", max_steps " +
                                std::to_string(max_steps));
  }
  if (int64_t{n_core} * max_steps > (int64_t{1} << 20)) {
    return InvalidArgumentError("KV slot layout: " + std::to_string(max_steps) +
                                " steps is too many");
  }
  return Status::Ok();
}

std::string KvSlotLayout::ToString() const {
  switch (share) {
    case KvShare::kFull: return "full";
    case KvShare::kCompressS: return "compress-s" + std::to_string(share_k);
    case KvShare::kCompressR: return "compress-r" + std::to_string(share_k);
  }
  return "?";
}

}  // namespace muninn::model
