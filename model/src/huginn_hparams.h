// Private: Huginn (HF model_type "huginn_raven") hyperparameters and tensor names, used by
// model_hparams.cc. specs/huginn.md §2 (config keys) and §6 (tensor names).
#pragma once

#include <span>
#include <string>

#include "muninn/model/model_hparams.h"

namespace muninn::model::internal {

// Reads config.json's Huginn keys (n_embd, n_heads, n_layers, n_layers_in_prelude,
// n_layers_in_recurrent_block, n_layers_in_coda, mean_recurrence, block_size, vocab_size /
// padded_vocab_size, intermediate_size, rope_base, norm_eps, qk_bias, tie_embeddings, ...).
// NotFound naming a missing key; Unimplemented naming a key whose value muninn does not run
// (injection_type other than "linear", another block/norm/MLP class, biases, test-time noise).
StatusOr<ModelHParams> ReadHfHuginn(const Checkpoint& ckpt);
// Layer counts that add up, MHA when qk_bias, a finite positive embedding scale.
Status ValidateHuginn(const ModelHParams& hp);
// "transformer.core_block.1.attn.Wqkv.weight" for (kAttnQkv, layer n_prelude + 1), ...
std::string HuginnTensorName(const ModelHParams& hp, WeightRole role, int64_t layer);
std::span<const WeightRole> HuginnRoles(const ModelHParams& hp);

}  // namespace muninn::model::internal
