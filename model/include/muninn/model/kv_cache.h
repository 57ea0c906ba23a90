// KvCache: per-layer keys and values of the tokens a sequence has seen so far.
//
// Layout: for each physical layer, K and V are [n_ctx, n_head_kv, head_dim] in the cache dtype
// (f16 by default, halving the bytes decode reads; f32 for exactness), allocated once on the
// backend's device. Position p of the sequence lives in row p. Keys are stored AFTER RoPE (the
// pre-RoPE keys a memory layer needs are captured separately, see ForwardOptions::capture_layer).
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
#include "muninn/model/tokenizer.h"

namespace muninn::model {

struct KvCacheOptions {
  int64_t n_ctx = 2048;         // positions the cache can hold (> 0)
  DType dtype = DType::kF16;    // kF16 or kF32
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

  int n_layer() const { return static_cast<int>(k_.size()); }
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
  // Rows [u.begin, u.begin + u.n) of layer `layer`: [n, n_head_kv, head_dim] views to write.
  Tensor KeySlots(int layer, const KvUpdate& u) const;
  Tensor ValueSlots(int layer, const KvUpdate& u) const;
  // Rows [0, end) of layer `layer`: what attention reads; `end` may include reserved rows.
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

  int n_head_kv_ = 0;
  int head_dim_ = 0;
  int64_t n_ctx_ = 0;
  DType dtype_ = DType::kF16;
  std::vector<Tensor> k_;  // per layer [n_ctx, n_head_kv, head_dim]
  std::vector<Tensor> v_;  // per layer [n_ctx, n_head_kv, head_dim]
  int64_t n_past_ = 0;
  std::vector<TokenId> tokens_;  // [n_past]
  uint64_t epoch_ = 0;           // bumped by every change, so stale updates are caught
};

}  // namespace muninn::model
