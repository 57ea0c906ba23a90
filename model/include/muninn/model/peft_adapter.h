// LoRA adapters as Hugging Face PEFT folders (specs/training.md): `adapter_config.json` (peft_type
// "LORA", r, lora_alpha, lora_dropout, target_modules, layers_to_transform, modules_to_save,
// base_model_name_or_path, ...) and `adapter_model.safetensors` with F32 tensors named
//   base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight   [r, in]
//   base_model.model.model.layers.N.self_attn.q_proj.lora_B.weight   [out, r]
//   base_model.model.model.layers.N.input_layernorm.weight           [n_embd] (trained norms,
//   base_model.model.model.layers.N.post_attention_layernorm.weight   PEFT's modules_to_save)
// On a GGUF llama (interleaved RoPE, Q/K rows permuted per head by llama.cpp's converter) the
// q/k LoRA B rows are in that permuted order inside muninn; they are written and read in Hugging
// Face order, so one folder serves the GGUF and the HF checkpoint of the same model.
// PEFT wraps every module named in modules_to_save, in every layer, and its loader wants a tensor
// for each, so the norms of the layers below the trained range are written too, as the base
// model's weights (`weights`).
// Memory gates (per-head memory logit biases, lora.h) are no PEFT module: they go to a third file,
// `memory_gates.safetensors`, beside PEFT's two (which PEFT ignores), with one F32 tensor
//   model.layers.N.self_attn.memory_gate   [n_head]
// per gated layer and metadata "muninn": "memory_gates", "layers": "17,19,...", "n_head". The
// file exists only when the adapter has gates; writing a folder without gates removes it.
#pragma once

#include <string>

#include "muninn/core/status.h"
#include "muninn/model/lora.h"

namespace muninn::model {

// Writes `dir`/adapter_config.json and `dir`/adapter_model.safetensors (dir is created; existing
// files are replaced, each through a temporary file and a rename).
Status WritePeftAdapter(const LoraParams& params, const ModelWeights& weights,
                        const std::string& dir, const std::string& base_model_name);

// Reads a PEFT LoRA folder for a model of `model_config` / `weights` (norm weights the adapter
// does not hold are the model's). Supports what WritePeftAdapter writes and what PEFT writes for
// llama LoRA: one rank and alpha for all matrices (no rank_pattern / alpha_pattern), no DoRA,
// rsLoRA, biases or fan_in_fan_out; layers_to_transform or all layers (the trained layers must be
// a top range [first, n_layer)). Norm weights of layers below that range must equal the base
// model's. InvalidArgument / NotFound naming the file and what is wrong.
StatusOr<LoraParams> ReadPeftAdapter(const std::string& dir, const ModelConfig& model_config,
                                     const ModelWeights& weights);

}  // namespace muninn::model
