// MemoryKV: retrieved memory keys/values handed to the model's attention layers, as plain tensors.
//
// model/ never includes memory/: the retriever gathers the chosen chunks from the memory bank and
// passes them here as tensor views. Every retrieval layer attends jointly over [memory ; local]
// with one softmax (Backend::Attention). How memory keys are positioned is the caller's choice,
// per layer:
//  - query_position = -1 (default): the keys are scored with the layer's ordinary (rotated)
//    queries. Pre-RoPE keys then sit at RoPE position 0 (MemLong, specs/memlong.md §6); keys the
//    caller rotated itself sit wherever it put them (e.g. contiguous positions just before the
//    window: memory token i of M at i - M).
//  - query_position = P >= 0: the keys are pre-RoPE (position 0) and are scored with the layer's
//    pre-RoPE queries rotated at the one position P, so every memory key sits at distance P from
//    every query (context memory / InfLLM, specs/memory_modes.md §2: P = the local window length).
// Local keys always use the ordinary queries. Layers without an entry (or with undefined tensors)
// run plain causal attention.
//
// A value type of non-owning views: the tensors share ownership of their buffers, which the caller
// must not modify while a forward runs. Read-only inside the model (memlong.md D3).
#pragma once

#include <cstdint>
#include <vector>

#include "muninn/core/backend.h"
#include "muninn/core/status.h"
#include "muninn/core/tensor.h"

namespace muninn::model {

struct LayerMemoryKV {
  Tensor k;  // [M, n_head_kv, head_dim] f32 or f16 (pre-RoPE or caller-rotated), or undefined
  Tensor v;  // [M, n_head_kv, head_dim] f32 or f16, or undefined
  // >= 0: memory keys are scored with the queries rotated at this one position (see above);
  // -1: with the ordinary queries. Must fit int32.
  int64_t query_position = -1;
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

// `keys` [M, n_head_kv, head_dim] (f32 or f16, pre-RoPE, packed rows) rotated to positions
// first_position .. first_position + M - 1, as a new contiguous f32 tensor on the backend (the
// contiguous placement: first_position = -M puts memory just before a window starting at 0).
// InvalidArgument when a position does not fit int32 or the keys are not [M, heads, head_dim].
StatusOr<Tensor> RotateMemoryKeys(Backend* backend, const RopeParams& rope, const Tensor& keys,
                                  int64_t first_position);

}  // namespace muninn::model
