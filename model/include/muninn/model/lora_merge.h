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

// Whether adapted matrices can be written as `dtype` by MergeLoraIntoGguf: the weight types
// muninn quantizes and llama.cpp loads (f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0).
bool IsMergeMatrixType(DType dtype);

// The type MergeLoraIntoGguf writes an adapted matrix in.
struct MergeMatrixType {
  enum Kind {
    kAuto,   // a float matrix (f32, f16, bf16) keeps its type; a quantized one becomes q8_0
    kSame,   // each matrix in its own type in the base file, re-quantized
    kFixed,  // `dtype` for every matrix
  };
  Kind kind = kAuto;
  DType dtype = DType::kF32;  // kFixed only
  static MergeMatrixType Fixed(DType d) { return {kFixed, d}; }
};

// `muninn lora merge`: a copy of the llama GGUF file `src_gguf` with `params` merged (as
// MergeLora does) into `dst_gguf`: every metadata entry and every tensor the adapter does not
// touch are copied as they are (quantized tensors stay quantized, same bytes); trained norms are
// replaced. Adapted matrices are merged in f32 and written as `type` says; a type that is not a
// merge type (IsMergeMatrixType; e.g. kSame on a q4_K matrix) is an InvalidArgument naming the
// tensor. Re-quantizing adds its rounding to the merged matrix: on the run3 adapter (SmolLM2
// Q4_1) q8_0 moves KJV perplexity by -0.1 %, q4_1 (kSame) by +4 % (docs/TRAINING.md); with
// kSame a q4_1 matrix the adapter leaves unchanged comes back bit for bit. `params` must be in the
// file's own row order (what ReadPeftAdapter gives for a model loaded from that file). Written
// atomically. Unimplemented for an adapter with memory gates (a GGUF model has no place for them).
Status MergeLoraIntoGguf(const std::string& src_gguf, const LoraParams& params, float mult,
                         const std::string& dst_gguf, MergeMatrixType type = {});

}  // namespace muninn::model
