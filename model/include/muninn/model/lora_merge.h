// Applying a LoRA adapter for inference by merging it into the weights:
//   W' = W + mult · (alpha / rank) · B · A     for every adapted matrix,
// and the adapter's trained RMSNorm weights replacing the base ones. The merged matrices are new
// f32 tensors (a quantized base matrix is dequantized first, so an adapted Q4_1 matrix runs in
// f32: exact, but slower and 8x its Q4_1 bytes); every other weight is shared with the base model
// (views, no copy). `mult` is the user's extra scale (`--lora PATH:SCALE`, 1 = as trained).
// Memory gates become the layers' LayerWeights::mem_bias, times `mult` (like the LoRA delta).
#pragma once

#include <memory>
#include <string>

#include "muninn/core/status.h"
#include "muninn/model/lora.h"
#include "muninn/model/model.h"

namespace muninn::model {

// A new Model on base's backend (CPU host weights only; Unimplemented otherwise) with `params`
// merged. `params` must have been made for base's configuration (InvalidArgument otherwise).
// The result shares ownership of the base weights' buffers, so `base` itself may be destroyed.
StatusOr<std::unique_ptr<Model>> MergeLora(const Model& base, const LoraParams& params,
                                           float mult = 1.0f);

// `muninn lora merge`: a copy of the llama GGUF file `src_gguf` with `params` merged (as
// MergeLora does) into `dst_gguf`: every metadata entry and every tensor the adapter does not
// touch are copied as they are (quantized tensors stay quantized, same bytes); adapted matrices
// become F32, trained norms are replaced. `params` must be in the file's own row order (what
// ReadPeftAdapter gives for a model loaded from that file). Written atomically. Unimplemented for
// an adapter with memory gates (a GGUF model has no place for them).
Status MergeLoraIntoGguf(const std::string& src_gguf, const LoraParams& params, float mult,
                         const std::string& dst_gguf);

}  // namespace muninn::model
