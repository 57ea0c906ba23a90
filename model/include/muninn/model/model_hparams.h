// ModelHParams: the hyperparameters of a supported architecture, read from a Checkpoint's
// metadata (GGUF "<arch>.*" keys or config.json), and the mapping from model roles to the tensor
// names each format uses, with their expected shapes.
//
// Supported: llama-family decoders (GGUF arch "llama"; HF model_type "llama") and BERT encoders
// (HF model_type "bert" such as all-MiniLM-L6-v2, names with or without a "bert." prefix; GGUF
// arch "bert" as llama.cpp writes it) and Huginn recurrent-depth decoders (HF model_type
// "huginn_raven": config.json with its own keys, "transformer.*" tensor names; specs/huginn.md §2,
// §6). Anything else is Unimplemented naming the architecture.
//
// RoPE and the two formats' Q/K rows (this matters; getting it wrong gives fluent garbage):
//  - Hugging Face llama weights are in "rotate_half" order: within each head of q_proj/k_proj,
//    rotary pair i is (row i, row i + head_dim/2). Use RopeLayout::kHalves.
//  - llama.cpp's convert_hf_to_gguf.py PERMUTES the rows of attn_q and attn_k for llama models
//    (reshape each head's rows to [2, head_dim/2], swap the two axes): GGUF row 2i is HF row i and
//    GGUF row 2i+1 is HF row i + head_dim/2. llama.cpp then applies LLAMA_ROPE_TYPE_NORM, which
//    rotates ADJACENT pairs (x[2i], x[2i+1]) with frequency index i. In muninn that is
//    RopeLayout::kInterleaved on the stored GGUF weights.
//  Both give the same attention scores up to float summation order (the permutation is applied
//  to Q and K alike, and q·k is invariant under a common permutation of head dims); V and the output
//  projection are not permuted. ModelHParams::rope.layout records the right layout for the
//  checkpoint at hand, so a consumer just passes hp.rope to the rope op. A consumer that mixes
//  sources (e.g. compares GGUF Q against HF Q row by row) must undo the permutation itself.
//  BERT uses learned absolute positions (no RoPE).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "muninn/core/backend.h"
#include "muninn/core/status.h"
#include "muninn/model/checkpoint.h"

namespace muninn::model {

enum class ModelArch : uint8_t { kLlama, kBert, kHuginn };
std::string_view ModelArchName(ModelArch arch);  // "llama", "bert", "huginn"

// Model roles of weight tensors. Per-layer roles need a layer index; biases are separate roles.
enum class WeightRole : uint8_t {
  // global
  kTokenEmbd,      // [n_vocab, n_embd]
  kPosEmbd,        // bert: [n_ctx_train, n_embd]
  kTokenTypes,     // bert: [n_token_types, n_embd]
  kEmbdNorm,       // bert: [n_embd]
  kEmbdNormBias,   // bert: [n_embd]
  kOutputNorm,     // llama: [n_embd]
  kOutput,         // llama: [n_vocab, n_embd]; absent when tied_embeddings
  kAdapter,        // huginn: input-injection adapter [n_embd, 2·n_embd]
  // per layer
  kAttnNorm,       // llama: [n_embd]
  kAttnQ,          // [n_head * n_embd_head, n_embd]
  kAttnQBias,      // bert: [n_head * n_embd_head]
  kAttnK,          // [n_head_kv * n_embd_head, n_embd]
  kAttnKBias,      // bert
  kAttnV,          // [n_head_kv * n_embd_head, n_embd]
  kAttnVBias,      // bert
  kAttnOut,        // [n_embd, n_head * n_embd_head]
  kAttnOutBias,    // bert: [n_embd]
  kAttnOutNorm,    // bert: post-attention LayerNorm [n_embd]
  kAttnOutNormBias,
  kFfnNorm,        // llama: [n_embd]
  kFfnGate,        // llama: [n_ff, n_embd]
  kFfnUp,          // [n_ff, n_embd]
  kFfnUpBias,      // bert: [n_ff]
  kFfnDown,        // [n_embd, n_ff]
  kFfnDownBias,    // bert: [n_embd]
  kLayerOutNorm,   // bert: post-FFN LayerNorm [n_embd]
  kLayerOutNormBias,
  // huginn sandwich block (kAttnNorm = norm_1, kFfnNorm = norm_3, kAttnOut, kFfnDown as above)
  kAttnQkv,        // fused [n_embd_q + 2·n_embd_kv, n_embd], rows Q;K;V
  kAttnQkBias,     // [2, 1, n_head, n_embd_head]: q bias (0), k bias (1)
  kAttnPostNorm,   // norm_2 [n_embd]
  kFfnGateUp,      // fused [2·n_ff, n_embd], rows gate;up
  kFfnPostNorm,    // norm_4 [n_embd]
};
std::string_view WeightRoleName(WeightRole role);  // "attn_q", ...
bool IsPerLayer(WeightRole role);

struct ModelHParams {
  ModelArch arch = ModelArch::kLlama;
  CheckpointFormat format = CheckpointFormat::kGguf;  // decides the tensor names
  std::string bert_prefix;  // HF BERT only: "" or "bert." as found in the checkpoint

  int64_t n_vocab = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;     // == n_head without GQA
  int64_t n_embd_head = 0;   // per-head dim (config head_dim, GGUF attention.key_length, or
                             // n_embd / n_head)
  int64_t n_ff = 0;
  int64_t n_ctx_train = 0;   // trained context (llama) / max positions (bert)
  int64_t n_token_types = 0; // bert
  float norm_eps = 0.0f;     // RMSNorm eps (llama) or LayerNorm eps (bert)
  bool tied_embeddings = false;  // the output head is token_embd (no separate output weight)
  bool use_rope = true;          // false for bert
  RopeParams rope;               // layout per the header comment; n_rot = rotated dims per head
  // huginn: layers of the prelude / recurrent core / coda (sum n_layer), default iterations
  // (mean_recurrence), embedding scale (√n_embd unless config init_values.embed_scale says
  // otherwise) and whether the attention has q/k biases.
  int64_t n_layer_prelude = 0;
  int64_t n_layer_core = 0;
  int64_t n_layer_coda = 0;
  int64_t n_recurrence = 1;
  float embd_scale = 1.0f;
  bool qk_bias = false;

  int64_t n_embd_q() const { return n_head * n_embd_head; }
  int64_t n_embd_kv() const { return n_head_kv * n_embd_head; }
  // Positive sizes, divisibility (n_head % n_head_kv, even n_rot <= n_embd_head), eps > 0, and
  // sanity caps (so that later allocations sized by these values stay bounded).
  Status Validate() const;
  std::string ToString() const;  // one line per field, for `muninn model info`
};

// Reads and validates the hyperparameters. Errors: Unimplemented for an unknown architecture or
// RoPE scaling type, NotFound for a missing key, InvalidArgument for wrong types or values.
StatusOr<ModelHParams> ReadHParams(const Checkpoint& ckpt);

// The tensor name for `role` (and `layer` for per-layer roles) in the checkpoint's format, or ""
// when the architecture has no such role.
std::string TensorName(const ModelHParams& hp, WeightRole role, int64_t layer = -1);
// The expected shape of `role` (outermost first).
Shape ExpectedShape(const ModelHParams& hp, WeightRole role);
// Every role the architecture uses (kOutput only when not tied), in a fixed order.
std::span<const WeightRole> RolesOf(const ModelHParams& hp);

// The view of one weight, checked for presence, exact shape and a computable dtype.
StatusOr<Tensor> GetWeight(const Checkpoint& ckpt, const ModelHParams& hp, WeightRole role,
                           int64_t layer = -1);
// Checks every weight the architecture needs (all layers) without reading tensor bytes; the
// first problem is returned, e.g. "tensor 'blk.3.attn_q.weight' has shape [576, 576], expected
// [576, 192]".
Status ValidateWeights(const Checkpoint& ckpt, const ModelHParams& hp);

}  // namespace muninn::model
