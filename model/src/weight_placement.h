// Private to muninn_model: moving a model's weights onto its backend's device.
#pragma once

#include "muninn/core/backend.h"
#include "muninn/model/model.h"

namespace muninn::model {

// Returns `weights` with every defined tensor on `backend`'s device. Tensors already there are
// kept; host tensors are moved by copying each distinct host Buffer they view once (a GGUF
// mapping, a converted shard) and rebuilding every view at its offset and strides, so tied
// weights and fused views (wqkv / w_gate_up over wq, wk, wv / w_gate, w_up) stay views of one
// copy. On an error (out of device memory, a tensor on a third device) the partial copy is dropped.
StatusOr<ModelWeights> PlaceWeightsOn(Backend* backend, ModelWeights weights);

// The weights of layers [host_layers, n_layer), the output norm and the head copied to `backend`
// (one packed device tensor per distinct view); the embeddings and the lower layers stay on the
// host. A partial offload's placement (Model's LayerSplit).
StatusOr<ModelWeights> PlaceUpperLayersOn(Backend* backend, ModelWeights weights,
                                          int32_t host_layers);

}  // namespace muninn::model
