#include "muninn/model/memory_placement.h"

#include <algorithm>
#include <utility>

namespace muninn::model {
MemoryPlacement::MemoryPlacement(const Model& model) : backend_(model.backend()) {
  if (model.host_layers() == 0) return;
  for (int32_t l = 0; l < model.config().n_layer; ++l) {
    layer_backends_.push_back(model.LayerBackend(l));
  }
}

int64_t MemoryPlacement::reserved_bytes() const {
  int64_t total = 0;
  for (const Tensor& s : slots_) total += s.numel();
  return total;
}

StatusOr<Tensor> MemoryPlacement::SlotTensor(size_t slot, DType dtype, const Shape& shape) {
  auto strides = ContiguousStrides(dtype, shape);
  if (!strides)
    return InvalidArgumentError("memory tensor shape " + shape.ToString() + " overflows");
  const size_t bytes =
      static_cast<size_t>(shape.numel() / BlockSize(dtype)) * GetDTypeInfo(dtype).block_bytes;
  if (slots_.size() <= slot) slots_.resize(slot + 1);
  Tensor& s = slots_[slot];
  if (!s.defined() || static_cast<size_t>(s.numel()) < bytes) {
    // Grow geometrically: windows retrieve memories of varying length.
    const int64_t want =
        std::max<int64_t>(static_cast<int64_t>(bytes), s.defined() ? s.numel() * 2 : 0);
    s = Tensor();  // release the old block first
    ASSIGN_OR_RETURN(s, backend_->Allocate(DType::kU8, Shape{std::max<int64_t>(want, 1)}));
  }
  return Tensor::FromBuffer(s.buffer(), s.offset(), dtype, shape);
}

StatusOr<MemoryKV> MemoryPlacement::Place(const MemoryKV& memory) {
  const Device device = backend_->device();
  if (device.is_cpu() && layer_backends_.empty()) return memory;
  MemoryKV out = memory;
  std::vector<std::pair<Tensor, Tensor>> placed;  // host view -> its device copy
  std::vector<std::pair<Tensor, Tensor>> fetched;  // device view -> its host copy (split models)
  auto place = [&](Tensor* t) -> Status {
    if (!t->defined() || t->device() == device) return Status::Ok();
    if (!t->device().is_cpu()) {
      return InvalidArgumentError("memory tensor " + t->DebugString() + " lives on " +
                                  t->device().ToString() + ", neither the host nor " +
                                  device.ToString());
    }
    for (const auto& [host, dev] : placed) {
      if (SameView(host, *t)) {
        *t = dev;
        return Status::Ok();
      }
    }
    ASSIGN_OR_RETURN(Tensor dev, SlotTensor(placed.size(), t->dtype(), t->shape()));
    RETURN_IF_ERROR(
        backend_->Transfer(*t, &dev).WithContext("copying memory K/V to " + device.ToString()));
    placed.emplace_back(*t, dev);
    *t = std::move(dev);
    return Status::Ok();
  };
  // A host layer of a split model: its memory on the host.
  auto fetch = [&](Tensor* t) -> Status {
    if (!t->defined() || t->device().is_cpu()) return Status::Ok();
    for (const auto& [dev, host] : fetched) {
      if (SameView(dev, *t)) {
        *t = host;
        return Status::Ok();
      }
    }
    ASSIGN_OR_RETURN(Tensor host, CopyToHost(*backend_, *t));
    fetched.emplace_back(*t, host);
    *t = std::move(host);
    return Status::Ok();
  };
  for (size_t l = 0; l < out.layers.size(); ++l) {
    LayerMemoryKV& lm = out.layers[l];
    const bool on_host = l < layer_backends_.size() && layer_backends_[l]->device().is_cpu();
    RETURN_IF_ERROR(on_host ? fetch(&lm.k) : place(&lm.k));
    RETURN_IF_ERROR(on_host ? fetch(&lm.v) : place(&lm.v));
  }
  return out;
}

}  // namespace muninn::model
