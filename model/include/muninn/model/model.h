// Model: a decoder-only transformer run through a Backend, laid out as DESIGN.md describes:
//
//     embed → prelude (frozen bottom) → core × r → coda (upper, memory-attending) → norm → head
//
// Each stage is a range of physical layers [first, end) with a repeat count; every layer has a
// block type. A plain llama checkpoint is one stage holding every layer, r = 1, no adapter
// (ModelLayout::Plain). Splitting it, e.g. for MemLong, only moves stage boundaries; the math is
// unchanged. Recurrent cores (r > 1, Huginn's input-injection adapter) need per-iteration state
// that belongs to generation and arrive with that issue: Validate rejects r != 1 for now.
//
// Llama block (BlockType::kLlama), for T tokens at positions p..p+T-1 (buffers [T, ·] f32):
//   x  = RmsNorm(h) · attn_norm                                  // [T, n_embd]
//   q  = x·Wqᵀ [T, n_head, hd];  k = x·Wkᵀ, v = x·Wvᵀ [T, n_head_kv, hd]
//   q, k = RoPE(q, k; positions)            (layout from the checkpoint, see ModelConfig::rope)
//   K/V rows p..p+T-1 of the layer's cache = k, v                (k stored after RoPE)
//   a  = Attention(q, K[0..p+T), V[0..p+T), memory K/V of the layer if any; causal, GQA)
//   h += a·Woᵀ                                                    // attn_out
//   x  = RmsNorm(h) · ffn_norm
//   h += (silu(x·Wgateᵀ) ⊙ x·Wupᵀ)·Wdownᵀ                         // mlp_out
// then logits = RmsNorm(h_last) · output_norm · Wheadᵀ (Whead = the embedding table when tied).
// Weights stay in their checkpoint dtype (e.g. Q4_1) and go to Backend::MatMul as they are.
//
// Thread-compatible: one Forward at a time per Model (it reuses scratch buffers); the weights are
// read-only and may be shared by several Models on the same backend.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/backend.h"
#include "muninn/core/status.h"
#include "muninn/core/tensor.h"
#include "muninn/model/kv_cache.h"
#include "muninn/model/memory_kv.h"
#include "muninn/model/tokenizer.h"

namespace muninn::model {

// What the forward needs to know about the architecture (filled from the checkpoint's
// hyperparameters by the loader, model_loader.h).
struct ModelConfig {
  std::string architecture = "llama";
  int32_t n_vocab = 0;
  int32_t n_embd = 0;
  int32_t n_layer = 0;
  int32_t n_head = 0;
  int32_t n_head_kv = 0;
  int32_t head_dim = 0;  // usually n_embd / n_head
  int32_t n_ff = 0;
  int32_t n_ctx_train = 0;  // context the model was trained with (0 = unknown)
  float norm_eps = 1e-5f;
  // RoPE as the stored Q/K rows need it: GGUF llama files store Q/K rows permuted so that pairs are
  // adjacent (kInterleaved); Hugging Face checkpoints keep rotate-half order (kHalves).
  RopeParams rope;
  Status Validate() const;
};

enum class BlockType : uint8_t { kLlama };

// One physical layer's weights, as the checkpoint stores them (w: [n_out, n_in], any MatMul dtype;
// norm weights [n_embd] f32).
struct LayerWeights {
  BlockType type = BlockType::kLlama;
  Tensor attn_norm;  // [n_embd]
  Tensor wq;         // [n_head · hd, n_embd]
  Tensor wk;         // [n_head_kv · hd, n_embd]
  Tensor wv;         // [n_head_kv · hd, n_embd]
  Tensor wo;         // [n_embd, n_head · hd]
  Tensor ffn_norm;   // [n_embd]
  Tensor w_gate;     // [n_ff, n_embd]
  Tensor w_up;       // [n_ff, n_embd]
  Tensor w_down;     // [n_embd, n_ff]
};

struct ModelWeights {
  Tensor tok_embd;     // [n_vocab, n_embd], any GetRows dtype
  Tensor output_norm;  // [n_embd] f32
  Tensor output;       // [n_vocab, n_embd]; the same tensor as tok_embd when the head is tied
  std::vector<LayerWeights> layers;  // [n_layer]
};

// A range of physical layers [first, end) run `repeats` times.
struct Stage {
  std::string name;  // "prelude", "core", "coda"
  int32_t first = 0;
  int32_t end = 0;
  int32_t repeats = 1;
};

struct ModelLayout {
  std::vector<Stage> stages;
  // Every layer in one core stage, r = 1: a plain checkpoint.
  static ModelLayout Plain(int32_t n_layer);
  // prelude [0, a), core [a, b) × r, coda [b, n_layer): the MemLong / Huginn split.
  static ModelLayout Split(int32_t n_layer, int32_t core_first, int32_t core_end, int32_t repeats);
  // InvalidArgument unless the stages cover [0, n_layer) in order without gaps or overlaps;
  // Unimplemented for repeats != 1 (recurrent cores need the generation-side state).
  Status Validate(int32_t n_layer) const;
};

// A named intermediate, handed to a ForwardObserver while the forward runs. `value` is only valid
// during the call (copy what you keep). Names per layer (`layer` >= 0):
//   attn_norm, q, k_pre_rope, v, attn_out (after Wo, before the residual), ffn_norm,
//   mlp_out (after Wdown, before the residual), hidden (the layer's output)
// before the stack (`layer` = -1): embeddings (the token embeddings entering layer 0),
// and after the stack (`layer` = -1): output_norm (the rows whose logits are computed), logits.
struct Intermediate {
  std::string_view name;
  int32_t layer;
  const Tensor& value;  // [T, ...] f32
};
using ForwardObserver = std::function<void(const Intermediate&)>;

struct ForwardOptions {
  // Retrieved memory per layer (not owned; may be null).
  const MemoryKV* memory = nullptr;
  // Logits for every position ([T, n_vocab]) instead of the last one only ([1, n_vocab]).
  bool all_logits = false;
  // Skip the final norm and head (memory ingest needs only the captured K/V).
  bool compute_logits = true;
  // Layer whose pre-RoPE K and V are returned in ForwardResult (MemLong's memory layer); -1: none.
  int32_t capture_layer = -1;
  // Without a cache: the position of the first token (positions are start_pos..start_pos+T-1).
  int64_t start_pos = 0;
  // Stop after this physical layer (inclusive): memory ingest needs nothing above the memory
  // layer. -1 runs every layer. Only without a cache (a partial pass would leave the upper layers'
  // cache rows unwritten) and with compute_logits = false; InvalidArgument otherwise.
  int32_t last_layer = -1;
  ForwardObserver observer;  // may be empty
};

struct ForwardResult {
  Tensor logits;      // [1 or T, n_vocab] f32 (undefined when !compute_logits)
  Tensor captured_k;  // [T, n_head_kv, head_dim] f32, pre-RoPE (only with capture_layer >= 0)
  Tensor captured_v;  // [T, n_head_kv, head_dim] f32
};

class Model {
 public:
  // Checks every weight's shape and dtype against `config` (InvalidArgument naming the tensor) and
  // that `backend` supports the dtypes (Unimplemented otherwise). `backend` is not owned.
  static StatusOr<std::unique_ptr<Model>> Create(Backend* backend, const ModelConfig& config,
                                                 ModelWeights weights, ModelLayout layout);

  const ModelConfig& config() const { return config_; }
  const ModelLayout& layout() const { return layout_; }
  const ModelWeights& weights() const { return weights_; }
  Backend* backend() const { return backend_; }
  // Bytes of all weight tensors (the tied head counted once).
  size_t weight_bytes() const;

  // Replaces the stage layout (e.g. to mark MemLong's memory layer as the coda's first layer).
  Status SetLayout(ModelLayout layout);

  // A KV cache shaped for this model.
  StatusOr<std::unique_ptr<KvCache>> NewKvCache(const KvCacheOptions& options) const;

  // Runs `ids` (T >= 1 tokens, one batched pass) through the model.
  // With a cache: positions continue at cache->n_past(); the new K/V are committed to the cache
  // only when the whole forward succeeded (two-step update), ResourceExhausted when the tokens do
  // not fit. Without a cache (nullptr): attention sees only these T tokens, at start_pos.
  // InvalidArgument for an id outside the vocabulary or a memory tensor of the wrong shape.
  StatusOr<ForwardResult> Forward(std::span<const TokenId> ids, KvCache* cache,
                                  const ForwardOptions& options = {});

 private:
  Model(Backend* backend, const ModelConfig& config, ModelWeights weights, ModelLayout layout)
      : backend_(backend), config_(config), weights_(std::move(weights)),
        layout_(std::move(layout)) {}
  struct Scratch;
  Status EnsureScratch(int64_t n_tokens);
  Status RunLayer(int32_t layer, int64_t n_tokens, const Tensor& positions, KvCache* cache,
                  const KvUpdate* update, const ForwardOptions& options, ForwardResult* result);

  Backend* backend_;
  ModelConfig config_;
  ModelWeights weights_;
  ModelLayout layout_;
  std::shared_ptr<Scratch> scratch_;
};

}  // namespace muninn::model
