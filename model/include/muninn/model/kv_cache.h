// KvCache: per-slot keys and values of the tokens a sequence has seen so far.
//
// Layout: for each slot, K and V are [n_ctx, n_head_kv, head_dim] in the cache dtype
// (f16 by default, halving the bytes decode reads; f32 for exactness; q8_0, 34 bytes per 32
// values, halving them again where the backend attends over it), allocated once on the
// backend's device. Position p of the sequence lives in row p. Keys are stored AFTER RoPE (the
// pre-RoPE keys a memory layer needs are captured separately, see ForwardOptions::capture_layer).
//
// A slot is one physical layer for plain models; recurrent models (a core iterated r times) have
// slots per (iteration, core layer) as the cache's KvSlotLayout says (kv_slot_layout.h), and the
// accessors below take a slot index.
//
// Changes happen in two steps (CONVENTIONS.md, "State that changes"):
//   1. Prepare(ids) reserves rows [n_past, n_past + n); it fails with ResourceExhausted when they do
//      not fit and changes nothing. The forward writes the new K/V into KeySlots/ValueSlots; those
//      rows are invisible to everyone else until
//   2. Apply(update) makes them part of the sequence (n_past += n, the ids are recorded).
// A forward that fails between the two steps leaves the cache exactly as it was. Rollback drops
// the last k positions (e.g. rejected speculative tokens, or a stop string to retract).
//
// Thread-compatible: one sequence, one writer.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "muninn/core/backend.h"
#include "muninn/core/status.h"
#include "muninn/core/tensor.h"
#include "muninn/model/kv_slot_layout.h"
#include "muninn/model/tokenizer.h"

namespace muninn::model {

// The dtypes a KV cache can hold: f16, f32, q8_0 (whether a backend attends over it is
// KvCache::Create's check).
bool IsKvCacheDType(DType dtype);

struct KvCacheOptions {
  int64_t n_ctx = 2048;         // positions the cache can hold (> 0)
  DType dtype = DType::kF16;    // kF16, kF32, or kQ8_0 (half f16's bytes; CPU and CUDA)
  // Recurrent models only (ignored by plain ones): core iterations that get their own slots under
  // kFull / kCompressR sharing (0: the model's default r), and the sharing rule.
  int32_t max_steps = 0;
  KvShare share = KvShare::kFull;
  int32_t share_k = 0;          // K of compress-sK / compress-rK
  Status Validate() const;
};

// A reservation from KvCache::Prepare, consumed by Apply. Positions [begin, begin + n).
struct KvUpdate {
  int64_t begin = 0;
  int64_t n = 0;
  std::vector<TokenId> ids;  // [n] the tokens being added
  uint64_t epoch = 0;        // the cache state it was prepared against
};

class KvCache {
 public:
  // InvalidArgument for bad dimensions or options; ResourceExhausted when allocation fails.
  static StatusOr<std::unique_ptr<KvCache>> Create(Backend* backend, int n_layer, int n_head_kv,
                                                   int head_dim, const KvCacheOptions& options);
  // A cache with layout.n_slots() slots (a recurrent model's per-iteration slots).
  static StatusOr<std::unique_ptr<KvCache>> Create(Backend* backend, const KvSlotLayout& layout,
                                                   int n_head_kv, int head_dim,
                                                   const KvCacheOptions& options);
  // Slot i allocated on slot_backends[i] (layout.n_slots() entries, not owned): a model whose
  // bottom layers run on the host and upper layers on a device (Model's LayerSplit).
  static StatusOr<std::unique_ptr<KvCache>> Create(const std::vector<Backend*>& slot_backends,
                                                   const KvSlotLayout& layout, int n_head_kv,
                                                   int head_dim, const KvCacheOptions& options);

  // Number of slots (= physical layers for a plain model).
  int n_layer() const { return static_cast<int>(k_.size()); }
  int n_slots() const { return static_cast<int>(k_.size()); }
  const KvSlotLayout& slot_layout() const { return slot_layout_; }
  // Bytes one position occupies over all slots (K and V).
  size_t bytes_per_token() const;
  int n_head_kv() const { return n_head_kv_; }
  int head_dim() const { return head_dim_; }
  int64_t n_ctx() const { return n_ctx_; }
  DType dtype() const { return dtype_; }
  // Positions filled (= the position the next token gets).
  int64_t n_past() const { return n_past_; }
  int64_t n_free() const { return n_ctx_ - n_past_; }
  // The ids at positions [0, n_past).
  std::span<const TokenId> tokens() const { return tokens_; }
  // Bytes held by all K and V tensors.
  size_t nbytes() const;

  // Step 1: reserves the next ids.size() positions. ResourceExhausted (saying how many positions
  // are free) when they do not fit, InvalidArgument when `ids` is empty; changes nothing.
  StatusOr<KvUpdate> Prepare(std::span<const TokenId> ids) const;
  // Rows [u.begin, u.begin + u.n) of slot `layer`: [n, n_head_kv, head_dim] views to write.
  Tensor KeySlots(int layer, const KvUpdate& u) const;
  Tensor ValueSlots(int layer, const KvUpdate& u) const;
  // Rows [0, end) of slot `layer`: what attention reads; `end` may include reserved rows.
  Tensor Keys(int layer, int64_t end) const;
  Tensor Values(int layer, int64_t end) const;
  // Step 2: commits `u`. `u` must come from Prepare on the current state (programmer invariant).
  void Apply(const KvUpdate& u);

  // Drops the last `k` positions. OutOfRange when k > n_past or k < 0; changes nothing then.
  Status Rollback(int64_t k);
  // Forgets the whole sequence (the bytes are left as they are; nothing reads them).
  void Clear();

 private:
  KvCache() = default;

  KvSlotLayout slot_layout_;
  int n_head_kv_ = 0;
  int head_dim_ = 0;
  int64_t n_ctx_ = 0;
  DType dtype_ = DType::kF16;
  std::vector<Tensor> k_;  // per slot [n_ctx, n_head_kv, head_dim]
  std::vector<Tensor> v_;  // per slot [n_ctx, n_head_kv, head_dim]
  int64_t n_past_ = 0;
  std::vector<TokenId> tokens_;  // [n_past]
  uint64_t epoch_ = 0;           // bumped by every change, so stale updates are caught
};

}  // namespace muninn::model
