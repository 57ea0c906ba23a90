// Q/K row order of llama checkpoints: GGUF files (llama.cpp's converter) store the Q and K rows
// of each head permuted for interleaved RoPE, GGUF row 2i + j of a head = Hugging Face row
// j·hd/2 + i; muninn runs each checkpoint in its own order (RopeLayout::kInterleaved for GGUF),
// so LoRA B matrices of q/k trained on it are in that order too. Adapter formats fix one order:
// PEFT Hugging Face's, llama.cpp's GGUF adapters GGUF's.
#pragma once

#include <cstdint>

#include "muninn/model/lora.h"
#include "muninn/model/model.h"

namespace muninn::model::train {

// Reorders the rows of b [n_head·hd, cols] from GGUF to Hugging Face order (or back).
void PermuteHeadRows(float* b, int64_t n_head, int64_t hd, int64_t cols, bool gguf_to_hf);

// Whether the model's q/k rows are in GGUF's permuted order.
inline bool PermutedQk(const ModelConfig& mc) { return mc.rope.layout == RopeLayout::kInterleaved; }

// Heads of target t's output (q: n_head, k: n_head_kv); only for q and k.
inline int64_t QkHeads(const ModelConfig& mc, LoraTarget t) {
  return t == LoraTarget::kQ ? mc.n_head : mc.n_head_kv;
}

}  // namespace muninn::model::train
