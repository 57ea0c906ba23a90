// Private to the CUDA backend: quantized weights decoded to f16 (bf16) once and kept for the
// prefill GEMMs (ops_matmul.cc), within a byte budget. Weights are immutable while their buffer
// lives; an entry holds a weak reference to the weight's buffer, so a weight that was freed (and a
// new one allocated at the same address) is never served from a stale entry.
//
// Filling is first come, first kept: nothing is evicted while its weight lives, so a model larger
// than the budget keeps its first matrices decoded and decodes the rest tile by tile per call, as
// without a cache, instead of thrashing. Thread-compatible (a backend is used by one thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "muninn/core/tensor.h"

namespace muninn::cuda {

class DecodedWeightCache {
 public:
  explicit DecodedWeightCache(size_t budget_bytes) : budget_(budget_bytes) {}

  // The decoded copy of `w` in `half` ([N, K] packed), or nullptr.
  const Tensor* Find(const Tensor& w, DType half);
  // Whether `bytes` more fit the budget, after dropping (and freeing) the entries whose weight is
  // gone.
  bool Fits(size_t bytes);
  // Keeps `decoded` (the whole of `w` in `half`) for later calls.
  void Insert(const Tensor& w, DType half, Tensor decoded);
  // The device had no memory for a whole decoding: the budget shrinks to what is used now (less
  // what freed weights give back later), so later calls do not try, and fail, again.
  void StopGrowing() { budget_ = used_; }

  size_t used_bytes() const { return used_; }
  size_t entries() const { return entries_.size(); }

 private:
  struct Entry {
    std::weak_ptr<Buffer> owner;  // the weight's buffer
    const void* data = nullptr;   // the weight's first byte
    DType dtype = DType::kF32;
    DType half = DType::kF16;
    int64_t n = 0, k = 0, row_stride = 0;
    Tensor decoded;
  };
  bool Matches(const Entry& e, const Tensor& w, DType half) const;
  void DropDead();

  size_t budget_;
  size_t used_ = 0;
  std::vector<Entry> entries_;
};

}  // namespace muninn::cuda
