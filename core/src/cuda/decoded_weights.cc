#include "cuda/decoded_weights.h"

#include <algorithm>
#include <utility>

namespace muninn::cuda {

bool DecodedWeightCache::Matches(const Entry& e, const Tensor& w, DType half) const {
  if (e.data != w.data() || e.dtype != w.dtype() || e.half != half || e.n != w.dim(0) ||
      e.k != w.dim(1) || e.row_stride != w.stride(0)) {
    return false;
  }
  // The same buffer object, still alive: not a new weight at a reused address.
  const std::shared_ptr<Buffer> owner = e.owner.lock();
  return owner != nullptr && owner == w.buffer();
}

void DecodedWeightCache::DropDead() {
  auto dead = std::remove_if(entries_.begin(), entries_.end(), [&](const Entry& e) {
    if (!e.owner.expired()) return false;
    used_ -= e.decoded.nbytes();
    return true;
  });
  entries_.erase(dead, entries_.end());
}

const Tensor* DecodedWeightCache::Find(const Tensor& w, DType half) {
  for (const Entry& e : entries_) {
    if (Matches(e, w, half)) return &e.decoded;
  }
  return nullptr;
}

bool DecodedWeightCache::Fits(size_t bytes) {
  DropDead();  // decodings of freed weights give their memory back first
  return used_ + bytes <= budget_;
}

void DecodedWeightCache::Insert(const Tensor& w, DType half, Tensor decoded) {
  Entry e;
  e.owner = w.buffer();
  e.data = w.data();
  e.dtype = w.dtype();
  e.half = half;
  e.n = w.dim(0);
  e.k = w.dim(1);
  e.row_stride = w.stride(0);
  used_ += decoded.nbytes();
  e.decoded = std::move(decoded);
  entries_.push_back(std::move(e));
}

}  // namespace muninn::cuda
