// KvSlotLayout: which KV-cache slot an attention call reads and writes, for models whose middle
// stack is a recurrent core iterated r times (specs/huginn.md §8.1–8.2).
//
// The physical layers split into prelude [0, a), core [a, b) and coda [b, n_layer). A slot is one
// [n_ctx, n_head_kv, head_dim] K/V pair. Prelude layer l uses slot l; the coda's layers use the
// last n_coda slots; core layer j (0-based inside the core) at iteration t (0-based) has the core
// slot index c = n_core·t + j, which the sharing rule maps onto the core's physical slots:
//
//   kFull        c itself: n_core · max_steps distinct core slots; a token at (t, j) attends to
//                earlier tokens' K/V of the same iteration and layer (HF "full", 4 + 4r slots
//                for Huginn). Iterations beyond max_steps are an error.
//   kCompressS   c mod K (HF compress-sK): K core slots, overwritten cyclically. K = n_core gives
//                one slot per core layer (the vLLM plugin's layout, HF compress-s4).
//   kCompressR   ⌊c / K⌋ (HF compress-rK): groups of K consecutive core slots share one.
//
// A plain (non-recurrent) model is the case n_prelude = n_coda = 0, max_steps = 1, kFull: slot l
// is physical layer l. Value type; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "muninn/core/status.h"

namespace muninn::model {

enum class KvShare : uint8_t { kFull, kCompressS, kCompressR };

struct KvSlotLayout {
  int32_t n_prelude = 0;  // physical layers before the core
  int32_t n_core = 0;     // physical layers of the core
  int32_t n_coda = 0;     // physical layers after the core
  int32_t max_steps = 1;  // kFull / kCompressR: iterations with slots; kCompressS: any number
  KvShare share = KvShare::kFull;
  int32_t share_k = 0;    // K of compress-sK / compress-rK (> 0 there)

  // Identity layout of a plain n_layer model.
  static KvSlotLayout PerLayer(int32_t n_layer);
  // Parses "full", "s4"/"compress-s4", "r2"/"compress-r2" into share / share_k.
  static Status ParseShare(std::string_view text, KvShare* share, int32_t* share_k);

  int32_t n_layer() const { return n_prelude + n_core + n_coda; }
  int32_t n_core_slots() const;
  int32_t n_slots() const { return n_prelude + n_core_slots() + n_coda; }
  // Whether iterations 0..steps-1 all have a slot.
  bool SupportsSteps(int32_t steps) const;
  // The slot of physical `layer` at core `iteration` (ignored outside the core). Programmer
  // invariant: layer in range and, inside the core, SupportsSteps(iteration + 1).
  int32_t Slot(int32_t layer, int32_t iteration) const;
  // Positive sizes, a valid K; InvalidArgument naming the field otherwise.
  Status Validate() const;
  std::string ToString() const;  // "full", "compress-s4", ...
  bool operator==(const KvSlotLayout&) const = default;
};

}  // namespace muninn::model
