// MemoryPlacement: puts retrieved memory (MemoryKV, memory_kv.h) on the model's backend.
//
// Memory K/V come from the memory bank as host tensors. A CPU backend reads them where they are;
// a device backend's Attention accepts only tensors on its device, so each retrieval's memory is
// copied there once (Backend::Transfer) and then read by every forward until the next retrieval.
// The copies go into device buffers kept from one Place to the next and grown only when a
// retrieval needs more, so steady-state retrieval allocates nothing on the device.
//
// Thread-compatible: one Place at a time.
#pragma once

#include <cstdint>
#include <vector>

#include "muninn/core/backend.h"
#include "muninn/core/status.h"
#include "muninn/core/tensor.h"
#include "muninn/model/memory_kv.h"
#include "muninn/model/model.h"

namespace muninn::model {

class MemoryPlacement {
 public:
  // `backend` is not owned and must outlive the placement.
  explicit MemoryPlacement(Backend* backend) : backend_(backend) {}
  // For `model`'s layers wherever each runs (a split model, Model's LayerSplit: its host layers
  // get host tensors — copied back when a caller rotated them on the device — and the others
  // device copies). The model is not owned and must outlive the placement.
  explicit MemoryPlacement(const Model& model);

  // `memory` with every tensor that does not live on the backend's device replaced by a packed
  // copy there. A view shared by several layers (MemLong hands one K/V to every retrieval layer)
  // is copied once. Tensors already on the device are kept as they are. On a CPU backend the
  // result is `memory` itself: no copy, no allocation.
  //
  // The copies live in this placement's buffers: they stay valid until the next Place (which
  // reuses the buffers), so the caller replaces the memory it hands to forwards at each Place.
  StatusOr<MemoryKV> Place(const MemoryKV& memory);

  // Bytes of device buffers held for reuse.
  int64_t reserved_bytes() const;

 private:
  // A device tensor of `dtype` and `shape` in buffer slot `slot` (grown when too small).
  StatusOr<Tensor> SlotTensor(size_t slot, DType dtype, const Shape& shape);

  Backend* backend_;
  std::vector<Backend*> layer_backends_;  // per layer (split models); empty: all on backend_
  std::vector<Tensor> slots_;  // u8 [capacity] device buffers, one per distinct memory tensor
};

}  // namespace muninn::model
