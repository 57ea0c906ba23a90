#include "muninn/model/kv_cache.h"

#include <algorithm>
#include <string>
#include <vector>

namespace muninn::model {

bool IsKvCacheDType(DType dtype) {
  return dtype == DType::kF16 || dtype == DType::kF32 || dtype == DType::kQ8_0;
}

Status KvCacheOptions::Validate() const {
  if (n_ctx <= 0) {
    return InvalidArgumentError("KV cache n_ctx must be positive, got " + std::to_string(n_ctx));
  }
  if (!IsKvCacheDType(dtype)) {
    return InvalidArgumentError("KV cache dtype must be f16, f32 or q8_0, got " +
                                std::string(DTypeName(dtype)));
  }
  if (max_steps < 0 || (share != KvShare::kFull && share_k <= 0)) {
    return InvalidArgumentError("KV cache max_steps must be >= 0 and a shared layout needs K > 0; "
                                "got max_steps " + std::to_string(max_steps) + ", K " +
                                std::to_string(share_k));
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<KvCache>> KvCache::Create(Backend* backend, int n_layer, int n_head_kv,
                                                   int head_dim, const KvCacheOptions& options) {
  if (n_layer <= 0) {
    return InvalidArgumentError("KV cache needs positive n_layer, n_head_kv, head_dim; got " +
                                std::to_string(n_layer) + ", " + std::to_string(n_head_kv) +
                                ", " + std::to_string(head_dim));
  }
  return Create(backend, KvSlotLayout::PerLayer(n_layer), n_head_kv, head_dim, options);
}

StatusOr<std::unique_ptr<KvCache>> KvCache::Create(Backend* backend, const KvSlotLayout& layout,
                                                   int n_head_kv, int head_dim,
                                                   const KvCacheOptions& options) {
  MUNINN_CHECK(backend != nullptr);
  RETURN_IF_ERROR(layout.Validate());
  return Create(std::vector<Backend*>(static_cast<size_t>(std::max(layout.n_slots(), 0)), backend),
                layout, n_head_kv, head_dim, options);
}

StatusOr<std::unique_ptr<KvCache>> KvCache::Create(const std::vector<Backend*>& slot_backends,
                                                   const KvSlotLayout& layout, int n_head_kv,
                                                   int head_dim, const KvCacheOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  RETURN_IF_ERROR(layout.Validate());
  const int n_layer = layout.n_slots();
  if (n_layer <= 0 || n_head_kv <= 0 || head_dim <= 0) {
    return InvalidArgumentError("KV cache needs positive n_layer, n_head_kv, head_dim; got " +
                                std::to_string(n_layer) + ", " + std::to_string(n_head_kv) +
                                ", " + std::to_string(head_dim));
  }
  MUNINN_CHECK(slot_backends.size() == static_cast<size_t>(n_layer));
  if (options.dtype == DType::kQ8_0 && head_dim % BlockSize(DType::kQ8_0) != 0) {
    return InvalidArgumentError("a q8_0 KV cache needs a head dim that is a multiple of " +
                                std::to_string(BlockSize(DType::kQ8_0)) + ", got " +
                                std::to_string(head_dim));
  }
  // The forward writes new rows with Copy (f32 -> cache dtype) and attention reads them.
  for (Backend* backend : slot_backends) {
    MUNINN_CHECK(backend != nullptr);
    if (!backend->SupportsOp({OpKind::kAttention, options.dtype}) ||
        !backend->SupportsOp({OpKind::kCopy, options.dtype})) {
      return InvalidArgumentError("the " + backend->name() + " backend cannot hold a " +
                                  std::string(DTypeName(options.dtype)) +
                                  " KV cache (no attention over it or no conversion into it); "
                                  "use f16");
    }
  }
  std::unique_ptr<KvCache> cache(new KvCache());
  cache->slot_layout_ = layout;
  cache->n_head_kv_ = n_head_kv;
  cache->head_dim_ = head_dim;
  cache->n_ctx_ = options.n_ctx;
  cache->dtype_ = options.dtype;
  const Shape shape{options.n_ctx, n_head_kv, head_dim};
  for (int l = 0; l < n_layer; ++l) {
    Backend* backend = slot_backends[static_cast<size_t>(l)];
    auto k = backend->Allocate(options.dtype, shape);
    if (!k.ok()) return k.status().WithContext("allocating the KV cache");
    auto v = backend->Allocate(options.dtype, shape);
    if (!v.ok()) return v.status().WithContext("allocating the KV cache");
    cache->k_.push_back(std::move(k).value());
    cache->v_.push_back(std::move(v).value());
  }
  return cache;
}

size_t KvCache::nbytes() const {
  size_t total = 0;
  for (size_t l = 0; l < k_.size(); ++l) total += k_[l].nbytes() + v_[l].nbytes();
  return total;
}

size_t KvCache::bytes_per_token() const {
  return n_ctx_ > 0 ? nbytes() / static_cast<size_t>(n_ctx_) : 0;
}

StatusOr<KvUpdate> KvCache::Prepare(std::span<const TokenId> ids) const {
  if (ids.empty()) return InvalidArgumentError("a KV cache update needs at least one token");
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n > n_ctx_ - n_past_) {
    return ResourceExhaustedError(
        "context full: " + std::to_string(n) + " new tokens do not fit, the KV cache holds " +
        std::to_string(n_past_) + " of " + std::to_string(n_ctx_) +
        " positions; use a larger context (n_ctx) or a long-context session");
  }
  KvUpdate u;
  u.begin = n_past_;
  u.n = n;
  u.ids.assign(ids.begin(), ids.end());
  u.epoch = epoch_;
  return u;
}

namespace {
Tensor Rows(const Tensor& t, int64_t begin, int64_t end) {
  auto s = t.Slice(0, begin, end);
  MUNINN_CHECK(s.ok()) << s.status();
  return std::move(s).value();
}
}  // namespace

Tensor KvCache::KeySlots(int layer, const KvUpdate& u) const {
  MUNINN_CHECK(layer >= 0 && layer < n_layer()) << "layer " << layer;
  MUNINN_CHECK(u.epoch == epoch_ && u.begin == n_past_) << "stale KV update";
  return Rows(k_[static_cast<size_t>(layer)], u.begin, u.begin + u.n);
}

Tensor KvCache::ValueSlots(int layer, const KvUpdate& u) const {
  MUNINN_CHECK(layer >= 0 && layer < n_layer()) << "layer " << layer;
  MUNINN_CHECK(u.epoch == epoch_ && u.begin == n_past_) << "stale KV update";
  return Rows(v_[static_cast<size_t>(layer)], u.begin, u.begin + u.n);
}

Tensor KvCache::Keys(int layer, int64_t end) const {
  MUNINN_CHECK(layer >= 0 && layer < n_layer()) << "layer " << layer;
  MUNINN_CHECK(end > 0 && end <= n_ctx_) << "end " << end;
  return Rows(k_[static_cast<size_t>(layer)], 0, end);
}

Tensor KvCache::Values(int layer, int64_t end) const {
  MUNINN_CHECK(layer >= 0 && layer < n_layer()) << "layer " << layer;
  MUNINN_CHECK(end > 0 && end <= n_ctx_) << "end " << end;
  return Rows(v_[static_cast<size_t>(layer)], 0, end);
}

void KvCache::Apply(const KvUpdate& u) {
  MUNINN_CHECK(u.epoch == epoch_ && u.begin == n_past_) << "stale KV update";
  MUNINN_CHECK(u.n == static_cast<int64_t>(u.ids.size()) && u.begin + u.n <= n_ctx_);
  tokens_.insert(tokens_.end(), u.ids.begin(), u.ids.end());
  n_past_ += u.n;
  ++epoch_;
}

Status KvCache::Rollback(int64_t k) {
  if (k < 0 || k > n_past_) {
    return OutOfRangeError("cannot roll back " + std::to_string(k) + " positions; the KV cache holds " +
                           std::to_string(n_past_));
  }
  n_past_ -= k;
  tokens_.resize(static_cast<size_t>(n_past_));
  ++epoch_;
  return Status::Ok();
}

void KvCache::Clear() {
  n_past_ = 0;
  tokens_.clear();
  ++epoch_;
}

}  // namespace muninn::model
