// MemoryKV: retrieved memory keys/values handed to the model's attention layers, as plain tensors.
//
// model/ never includes memory/: the retriever gathers the chosen chunks from the memory bank and
// passes them here as tensor views. Every retrieval layer attends jointly over [memory ; local]
// with one softmax (Backend::Attention); memory tokens sit at RoPE position 0, so the stored
// pre-RoPE keys are used as they are (specs/memlong.md §6). Layers without an entry (or with
// undefined tensors) run plain causal attention.
//
// A value type of non-owning views: the tensors share ownership of their buffers, which the caller
// must not modify while a forward runs. Read-only inside the model (memlong.md D3).
#pragma once

#include <cstdint>
#include <vector>

#include "muninn/core/tensor.h"

namespace muninn::model {

struct LayerMemoryKV {
  Tensor k;  // [M, n_head_kv, head_dim] f32 or f16, pre-RoPE (position 0), or undefined
  Tensor v;  // [M, n_head_kv, head_dim] f32 or f16, or undefined
  bool defined() const { return k.defined() && v.defined(); }
};

struct MemoryKV {
  // Indexed by physical layer; may be shorter than n_layer (missing layers have no memory).
  std::vector<LayerMemoryKV> layers;

  // The memory of `layer`, or nullptr when it has none.
  const LayerMemoryKV* ForLayer(int layer) const {
    if (layer < 0 || static_cast<size_t>(layer) >= layers.size()) return nullptr;
    const LayerMemoryKV& m = layers[static_cast<size_t>(layer)];
    return m.defined() ? &m : nullptr;
  }
};

}  // namespace muninn::model
