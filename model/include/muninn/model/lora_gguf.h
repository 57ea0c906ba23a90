// LoRA adapters in llama.cpp's GGUF adapter format (`llama-cli --lora FILE`, specs/training.md):
// metadata general.architecture = "llama", general.type = "adapter", adapter.type = "lora",
// adapter.lora.alpha (f32); per adapted matrix a pair of F32 tensors named after the base tensor,
//   blk.N.attn_q.weight.lora_a   ne = [n_in, r]    (shape [r, n_in] outermost first, as PEFT's A)
//   blk.N.attn_q.weight.lora_b   ne = [r, n_out]   ([n_out, r], as PEFT's B)
// with attn_q/attn_k/attn_v/attn_output/ffn_gate/ffn_up/ffn_down, q/k B rows in GGUF's permuted
// order (qk_order.h). Trained norm weights are written as blk.N.attn_norm.weight /
// blk.N.ffn_norm.weight; llama.cpp's loader (src/llama-adapter.cpp) skips "_norm.weight" tensors,
// so there an adapter whose norms trained runs with the base norms (muninn's own PEFT folder and
// --lora keep them). Memory gates (per-head memory logit biases, lora.h) are left out: llama.cpp
// has no such op and no memory; they live in the PEFT folder's memory_gates.safetensors only.
#pragma once

#include <string>

#include "muninn/core/status.h"
#include "muninn/model/lora.h"

namespace muninn::model {

// Writes `path` atomically.
Status WriteLlamaCppLoraGguf(const LoraParams& params, const std::string& path);

// The GGUF base tensor name a target adapts in layer `layer`, e.g. "blk.3.attn_q.weight".
std::string GgufLoraBaseName(int32_t layer, LoraTarget target);

}  // namespace muninn::model
