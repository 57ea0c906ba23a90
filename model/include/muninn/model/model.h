// Model: a decoder-only transformer run through a Backend, laid out as DESIGN.md describes:
//
//     embed → prelude (frozen bottom) → core × r → coda (upper, memory-attending) → norm → head
//
// Each stage is a range of physical layers [first, end) with a repeat count; every layer has a
// block type. A plain llama checkpoint is one stage holding every layer, r = 1, no adapter
// (ModelLayout::Plain). Splitting it, e.g. for MemLong, only moves stage boundaries; the math is
// unchanged.
//
// Llama block (BlockType::kLlama), for T tokens at positions p..p+T-1 (buffers [T, ·] f32):
//   x  = RmsNorm(h) · attn_norm                                  // [T, n_embd]
//   q  = x·Wqᵀ [T, n_head, hd];  k = x·Wkᵀ, v = x·Wvᵀ [T, n_head_kv, hd]
//   q_mem = RoPE(q; P) for every row, when the layer's memory has query_position P >= 0
//   q, k = RoPE(q, k; positions)            (layout from the checkpoint, see ModelConfig::rope)
//   K/V rows p..p+T-1 of the layer's cache = k, v                (k stored after RoPE)
//   a  = Attention(q, K[0..p+T), V[0..p+T), memory K/V of the layer if any (scored with q_mem
//        when present); causal, GQA)
//   h += a·Woᵀ                                                    // attn_out
//   x  = RmsNorm(h) · ffn_norm
//   h += (silu(x·Wgateᵀ) ⊙ x·Wupᵀ)·Wdownᵀ                         // mlp_out
// then logits = RmsNorm(h_last) · output_norm · Wheadᵀ (Whead = the embedding table when tied).
//
// Sandwich block (BlockType::kSandwich, Huginn; specs/huginn.md §3): the same attention and MLP
// with q/k biases added before RoPE and four norms, the residual stream re-normalised after each
// sub-block:  h = N2(h + Attn(N1(h)));  h = N4(h + MLP(N3(h))).  The checkpoint's fused Wqkv and
// gate;up matrices are used as row-range views (wq/wk/wv, w_gate/w_up), no copies.
//
// Recurrent core (Huginn, §4): with an input-injection adapter W [n_embd, 2·n_embd], the prelude's
// output e is kept and every core iteration t = 1..r starts from  s ← [s ; e]·Wᵀ  (state first),
// s₀ given by the caller (ForwardOptions::init_state; zeros when absent). After the last iteration
// s is normed with output_norm when ModelConfig::latent_norm (the "latent" state), the coda runs,
// and output_norm is applied again before the head. Without an adapter a core of r > 1 simply runs
// its layers r times. The embeddings are multiplied by ModelConfig::embd_scale (√n_embd for Huginn).
// KV slots per (iteration, core layer) come from the cache's KvSlotLayout (kv_slot_layout.h).
// Per-iteration decisions (adaptive exit, warm start, speculative drafts) belong to generation:
// the forward reports each iteration to ForwardOptions::on_step and stops when it says so.
//
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
  float embd_scale = 1.0f;   // multiplier on the token embeddings (Huginn: √n_embd)
  bool latent_norm = false;  // output_norm also applied to the core's output (Huginn's ln_f twice)
  Status Validate() const;
};

enum class BlockType : uint8_t { kLlama, kSandwich };

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
  // kSandwich only:
  Tensor attn_post_norm;  // [n_embd] N2
  Tensor ffn_post_norm;   // [n_embd] N4 (attn_norm is N1, ffn_norm is N3)
  Tensor q_bias;          // [n_head · hd] f32, or undefined
  Tensor k_bias;          // [n_head_kv · hd] f32, or undefined
  Tensor wqkv;            // [n_q + 2·n_kv, n_embd] the fused tensor wq/wk/wv view (may be undefined)
  Tensor w_gate_up;       // [2·n_ff, n_embd] the fused tensor w_gate/w_up view (may be undefined)
  // Per-head memory logit biases ("memory gates", AttentionParams::mem_bias): [n_head] added to
  // this layer's scores of memory keys whenever it reads memory; empty: none (no bias). They come
  // from an adapter (lora_merge.h), never from a checkpoint.
  std::vector<float> mem_bias;
};

struct ModelWeights {
  Tensor tok_embd;     // [n_vocab, n_embd], any GetRows dtype
  Tensor output_norm;  // [n_embd] f32
  Tensor output;       // [n_vocab, n_embd]; the same tensor as tok_embd when the head is tied
  std::vector<LayerWeights> layers;  // [n_layer]
  Tensor adapter;  // [n_embd, 2·n_embd] Huginn's input injection, or undefined
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
  // InvalidArgument unless the stages cover [0, n_layer) in order without gaps or overlaps and
  // every repeat count is >= 1; only the stage named "core" may repeat.
  Status Validate(int32_t n_layer) const;
  // The stage named "core", or nullptr.
  const Stage* core() const;
};

// A named intermediate, handed to a ForwardObserver while the forward runs. `value` is only valid
// during the call (copy what you keep) and lives on the model's backend: on a device backend it is
// a device tensor, to be read through Backend::Transfer. Names per layer (`layer` >= 0):
//   attn_norm, q_pre_rope, k_pre_rope, v, q (after RoPE), attn_out (after Wo, before the
//   residual), ffn_norm,
//   mlp_out (after Wdown, before the residual), hidden (the layer's output)
// before the stack (`layer` = -1): embeddings (the token embeddings entering layer 0),
// and after the stack (`layer` = -1): output_norm (the rows whose logits are computed), logits.
// Recurrent models add (`layer` = -1): prelude_out (e), adapter_out and state (the core's output)
// per iteration, latent (the normed final state); core layers' intermediates carry `iteration`.
struct Intermediate {
  std::string_view name;
  int32_t layer;
  const Tensor& value;  // [T, ...] f32
  int32_t iteration = 0;  // core iteration (0-based); 0 outside the core
};
using ForwardObserver = std::function<void(const Intermediate&)>;

// What ForwardOptions::on_step sees after core iteration `step` (1-based).
struct StepView {
  int32_t step;
  const Tensor& state;   // [T, n_embd] f32 the core's output s_step (only valid during the call)
  const Tensor* logits;  // [1, n_vocab] read-out of the last position, or nullptr (step_logits)
};
// Returns true to stop iterating (early exit); an error aborts the forward.
using StepCallback = std::function<StatusOr<bool>(const StepView&)>;

struct ForwardOptions {
  // Retrieved memory per layer (not owned; may be null).
  const MemoryKV* memory = nullptr;
  // Logits for every position ([T, n_vocab]) instead of the last one only ([1, n_vocab]).
  bool all_logits = false;
  // Skip the final norm and head (memory ingest needs only the captured K/V).
  bool compute_logits = true;
  // Also return every row's final normed hidden state, RmsNorm(h)·output_norm — the head's input —
  // in ForwardResult::final_states (kNN-LM keys). Independent of compute_logits, so ingest can take
  // the states without computing the n_vocab-wide head. Not with last_layer >= 0.
  bool final_states = false;
  // Layer whose pre-RoPE K and V are returned in ForwardResult (MemLong's memory layer); -1: none.
  int32_t capture_layer = -1;
  // Layers whose pre-RoPE K and V are returned in ForwardResult::captured, in this order (context
  // memory stores every reading layer's own K/V, all from one pass). Distinct layers of the
  // model; with last_layer >= 0 none may lie above it (set last_layer = the largest).
  std::vector<int32_t> capture_layers;
  // Without a cache: the position of the first token (positions are start_pos..start_pos+T-1).
  int64_t start_pos = 0;
  // Stop after this physical layer (inclusive): memory ingest needs nothing above the memory
  // layer. -1 runs every layer. Only without a cache (a partial pass would leave the upper layers'
  // cache rows unwritten) and with compute_logits = false; InvalidArgument otherwise.
  int32_t last_layer = -1;
  ForwardObserver observer;  // may be empty
  // ---- recurrent core ----
  // Core iterations (0: the layout's repeat count, e.g. config mean_recurrence); any value >= 1
  // (a plain model with r > 1 reruns its core stage's layers).
  int32_t steps = 0;
  // s₀, [T, n_embd] f32 host tensor; undefined: zeros. Only used with an adapter.
  Tensor init_state;
  // Called after every core iteration; may stop the loop (adaptive exit). May be empty.
  StepCallback on_step;
  // on_step also gets logits read out from the current state (latent norm → coda → norm → head,
  // last position). The read-out writes the coda's KV rows; the final pass rewrites them.
  bool step_logits = false;
};

struct ForwardResult {
  Tensor logits;      // [1 or T, n_vocab] f32 on the host, whatever the backend (undefined when !compute_logits)
  Tensor captured_k;  // [T, n_head_kv, head_dim] f32 host tensor, pre-RoPE (only with capture_layer >= 0)
  Tensor captured_v;  // [T, n_head_kv, head_dim] f32
  Tensor final_states;  // [T, n_embd] f32 host tensor (only with ForwardOptions::final_states)
  // One per ForwardOptions::capture_layers entry, same order (host tensors).
  struct CapturedKV {
    int32_t layer = -1;
    Tensor k;  // [T, n_head_kv, head_dim] f32, pre-RoPE
    Tensor v;  // [T, n_head_kv, head_dim] f32
  };
  std::vector<CapturedKV> captured;
  // Recurrent models (with an adapter or r > 1): the core's raw output after the last iteration
  // and its normed form (what the coda received), [T, n_embd] f32 host tensors.
  Tensor state;
  Tensor latent;
  int32_t steps = 0;  // core iterations run
};

// Partial offload (`--gpu-layers`, llama.cpp's -ngl): the token embeddings and the bottom
// `host_layers` layers run on `host` (a CPU backend, not owned), the layers above and the head on
// the model's (device) backend. Their weights, KV cache rows and scratch live where they run; the
// residual stream crosses once per forward, at layer host_layers. Plain (non-recurrent) models.
struct LayerSplit {
  Backend* host = nullptr;
  int32_t host_layers = 0;  // 0: every layer on the model's backend
};

class Model {
 public:
  // Checks every weight's shape and dtype against `config` (InvalidArgument naming the tensor) and
  // that `backend` supports the dtypes (Unimplemented otherwise). `backend` is not owned.
  static StatusOr<std::unique_ptr<Model>> Create(Backend* backend, const ModelConfig& config,
                                                 ModelWeights weights, ModelLayout layout);
  // With a layer split (above): InvalidArgument unless 0 <= host_layers < n_layer, the host is a
  // CPU backend and `backend` a device's when host_layers > 0; Unimplemented for a recurrent
  // model. Only the device part of the weights is copied to the device.
  static StatusOr<std::unique_ptr<Model>> Create(Backend* backend, const ModelConfig& config,
                                                 ModelWeights weights, ModelLayout layout,
                                                 const LayerSplit& split);

  const ModelConfig& config() const { return config_; }
  const ModelLayout& layout() const { return layout_; }
  const ModelWeights& weights() const { return weights_; }
  // The device backend: the head's, and every layer's unless the model is split.
  Backend* backend() const { return backend_; }
  // The backend layer `layer` runs on (the host's below a split).
  Backend* LayerBackend(int32_t layer) const {
    return layer < host_layers_ ? host_backend_ : backend_;
  }
  // Layers on the host (0 unless split) and the host backend (null unless split).
  int32_t host_layers() const { return host_layers_; }
  // Where a tensor that all of `layers` read is best made: the host backend when any of them runs
  // on the host (a split model), else backend(). Empty `layers`: backend().
  Backend* BackendReading(std::span<const int32_t> layers) const {
    for (int32_t l : layers) {
      if (l < host_layers_) return host_backend_;
    }
    return backend_;
  }
  Backend* host_backend() const { return host_backend_; }
  // Bytes of all weight tensors (the tied head counted once).
  size_t weight_bytes() const;
  // Whether the output head is the token embedding table (tied), as the checkpoint has it; a
  // split model keeps a device copy of a tied table for its head, still one weight.
  bool tied_head() const { return tied_head_; }

  // Replaces the stage layout (e.g. to mark MemLong's memory layer as the coda's first layer).
  Status SetLayout(ModelLayout layout);

  // Whether the core is recurrent: an adapter or a core stage that repeats.
  bool is_recurrent() const;
  // The same for weights and a layout not yet made into a model.
  static bool IsRecurrent(const ModelWeights& weights, const ModelLayout& layout);
  // The default core iterations (the core stage's repeat count; 1 without a core stage).
  int32_t default_steps() const;
  // The KV slot layout a cache made with `options` gets (per-iteration slots when recurrent).
  KvSlotLayout SlotLayoutFor(const KvCacheOptions& options) const;
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
  // Buffers for `cap` tokens on `backend`.
  StatusOr<std::shared_ptr<Scratch>> MakeScratch(Backend* backend, int64_t cap) const;
  Scratch& ScratchOf(int32_t layer) { return layer < host_layers_ ? *host_scratch_ : *scratch_; }
  // Moves rows [0, n_tokens) of the host scratch's residual stream to the device scratch's.
  Status CrossToDevice(int64_t n_tokens);
  Status RunLayer(int32_t layer, int32_t iteration, int64_t n_tokens, const Tensor& positions,
                  KvCache* cache, const KvUpdate* update, const ForwardOptions& options,
                  ForwardResult* result);
  // Runs stage `stage` once (iteration `iteration`) on the scratch residual stream.
  Status RunStage(const Stage& stage, int32_t iteration, int64_t n_tokens, const Tensor& positions,
                  KvCache* cache, const KvUpdate* update, const ForwardOptions& options,
                  ForwardResult* result, bool* done);
  // Logits of rows [first, T) of the residual stream into *logits.
  Status Head(int64_t first, int64_t n_tokens, const ForwardOptions& options, Tensor* logits);

  Backend* backend_;
  Backend* host_backend_ = nullptr;  // LayerSplit::host, or null
  int32_t host_layers_ = 0;          // layers [0, host_layers_) run on host_backend_
  bool tied_head_ = false;
  ModelConfig config_;
  ModelWeights weights_;
  ModelLayout layout_;
  std::shared_ptr<Scratch> scratch_;
  std::shared_ptr<Scratch> host_scratch_;  // the host layers' buffers (split models)
};

}  // namespace muninn::model
