// TrainModel: the training forward and backward of a llama model with LoRA adapters on its upper
// layers (issue 12). One call runs one block of T tokens:
//
//   frozen bottom [0, first_layer):   the inference Model's forward (its weights as loaded, e.g.
//                                      Q4_1, no activations kept, no backward)
//   trained layers [first_layer, n):  the llama block of model.h with LoRA on the configured
//                                      target matrices and the trained RMSNorm weights from
//                                      LoraParams, in f32 (frozen matrices dequantized once at
//                                      Create), keeping the activations the backward needs
//   head:                              output norm, then the fused softmax cross-entropy against
//                                      `labels` (kIgnoreLabel = -100 rows skipped)
//
// and the backward through the trained layers with the core kernels (backward.h,
// attention_backward.h, cross_entropy.h), adding the gradients of every LoraParams tensor into a
// caller's arena of the same layout. The frozen bottom gets no gradient, so nothing below
// first_layer is kept.
//
// Labels are aligned with the inputs: labels[t] is the token that should follow ids[t] (a
// caller shifts a text itself: ids = tokens[0..T), labels = tokens[1..T]).
//
// Memory: a block may attend to retrieved memory K/V per layer ([memory ; local], one softmax,
// memory.h conventions, both query modes); the memory is a constant (MemLong detaches it). A
// layer with a memory gate in LoraParams (LoraConfig::memory_gate_layers) adds its per-head bias
// to the memory keys' scores and gets the bias's gradient.
//
// Activations: by default every trained layer keeps its activations from forward to backward
// (about (4·n_embd + 4·n_q + 2·n_kv + 3·n_ff)·T floats per layer). With
// TrainModelOptions::recompute only each trained layer's input is kept and the layer's forward is
// rerun just before its backward (same kernels, same bits), about a third more compute.
//
// Device: the kernels are the model backend's TrainOps (train_ops.h). On the CPU backend they work
// on host arrays in place; on a device (CUDA) the trained layers' f32 weights, the activations, the
// LoRA parameters and the gradient arena live there — the parameters and the caller's gradients
// are copied up at the start of a call and the gradients back at its end, the frozen bottom's
// output and the batch's memory K/V go up once per call — and with a split model (partial
// offload) the trained layers run on the device whatever layers the model keeps on the host.
//
// Thread-compatible: one call at a time; the Model is borrowed and must
// outlive this object; it is also run (frozen bottom) by the calls.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "muninn/core/cross_entropy.h"
#include "muninn/core/status.h"
#include "muninn/core/thread_pool.h"
#include "muninn/core/train_ops.h"
#include "muninn/model/lora.h"
#include "muninn/model/memory_kv.h"
#include "muninn/model/model.h"

namespace muninn::model {

namespace train {
class BottomCache;  // model/src/train/bottom_cache.h
}  // namespace train

struct TrainModelOptions {
  // Keep only each trained layer's input and recompute the layer in the backward.
  bool recompute = false;
  // Pool for the CPU kernels (not owned; null runs them on the calling thread; device backends
  // ignore it). The CPU matmuls use OpenBLAS and its own threads (OPENBLAS_NUM_THREADS).
  ThreadPool* pool = nullptr;
  // Cross-entropy tiling (cross_entropy.h).
  int64_t ce_rows_per_block = 1024;
  int64_t ce_vocab_block = 4096;
  // A folder where the frozen bottom's output of every block is kept (n_embd f32 values a token)
  // and read back when the same block comes again (another epoch, a repeated run on the same
  // corpus); empty: none. Only blocks whose bottom reads no memory are cached. A hit is bit for
  // bit the computed value; see model/src/train/bottom_cache.h.
  std::string bottom_cache_dir;
};

// What the bottom cache did (TrainModel::bottom_cache_stats).
struct BottomCacheCounts {
  int64_t hits = 0;
  int64_t misses = 0;    // computed and written
  int64_t rejected = 0;  // a file that did not check out: computed and rewritten
  int64_t skipped = 0;   // blocks not cacheable (their bottom reads memory)
  // Blocks that could not be stored (disk full, folder gone): training goes on without them.
  int64_t write_errors = 0;
  std::string first_write_error;
};

// One block of tokens.
struct TrainBatch {
  std::span<const TokenId> ids;      // [T]
  std::span<const int32_t> labels;   // [T] next-token ids or kIgnoreLabel
  int64_t start_pos = 0;             // RoPE position of ids[0]
  const MemoryKV* memory = nullptr;  // retrieved memory per layer, or null
  uint64_t dropout_seed = 0;         // LoRA dropout masks (vary per step and micro-batch)
};

class TrainModel {
 public:
  // `model` (not owned) must be a llama model (plain kLlama blocks, no biases, not recurrent) on
  // a backend with training ops (CPU, CUDA); Unimplemented otherwise. `config` chooses the trained
  // layers; the trained layers' matrices and the head are dequantized to f32 here.
  static StatusOr<std::unique_ptr<TrainModel>> Create(Model* model, const LoraConfig& config,
                                                      const TrainModelOptions& options = {});

  const LoraConfig& lora_config() const { return lora_; }
  Model* model() const { return model_; }

  // The loss of `batch` under `params` (no gradients; dropout off, as in evaluation).
  StatusOr<CrossEntropyResult> Loss(const LoraParams& params, const TrainBatch& batch);

  // Forward and backward of `batch`: returns the loss and ADDS the gradient of
  // grad_scale · Σ_supervised loss_t (grad_scale 0: 1 / n_supervised, the mean) with respect to
  // every tensor of `params` into `grads` (params.size() floats, same layout). LoRA dropout is
  // applied as params.config() says, masks from batch.dropout_seed.
  StatusOr<CrossEntropyResult> ForwardBackward(const LoraParams& params, const TrainBatch& batch,
                                               float grad_scale, std::span<float> grads);

  // The model's weights with every norm weight (attention, MLP, output) on the host — copies when
  // the model lives on a device, the model's own tensors otherwise; the matrices are the model's.
  // What LoraParams::Create and the PEFT writer read (they copy norm values).
  const ModelWeights& host_norm_weights() const { return host_norms_; }

  // Zero when TrainModelOptions::bottom_cache_dir is empty.
  BottomCacheCounts bottom_cache_stats() const;

  ~TrainModel();

 private:
  struct Weights;
  struct LayerActs;
  struct Scratch;
  TrainModel(Model* model, const LoraConfig& config, const TrainModelOptions& options);

  Status CheckBatch(const LoraParams& params, const TrainBatch& batch) const;
  // The hidden state entering layer first_layer: [T, n_embd] into *h (from the bottom cache when
  // there is one and the block is in it; ComputeBottom runs the frozen layers).
  Status BottomForward(const TrainBatch& batch, std::vector<float>* h);
  Status ComputeBottom(const TrainBatch& batch, std::vector<float>* h);
  // The activation tensors of one trained layer for T tokens (kept while T does not change).
  Status EnsureActs(const LoraParams& params, int32_t layer, bool mem_q, int64_t T,
                    LayerActs* acts);
  // The per-call buffers for T tokens (kept while T does not change).
  Status PrepareScratch(int64_t T);
  Status LayerForward(int32_t layer, const LoraParams& params, const TrainBatch& batch, bool train,
                      const Tensor& h_in, LayerActs* acts, Tensor* h_out);
  // Backward of one trained layer: scratch's dh goes from d(h_out) to d(h_in); the parameter
  // gradients are added into scratch's gradient arena.
  Status LayerBackward(int32_t layer, const LoraParams& params, const TrainBatch& batch,
                       const LayerActs& acts);
  StatusOr<CrossEntropyResult> Run(const LoraParams& params, const TrainBatch& batch, bool train,
                                   float grad_scale, std::span<float> grads);

  Model* model_;
  LoraConfig lora_;
  TrainModelOptions options_;
  std::unique_ptr<Weights> weights_;
  std::unique_ptr<Scratch> scratch_;
  std::unique_ptr<TrainOps> ops_;  // the model backend's training ops
  ModelWeights host_norms_;
  std::unique_ptr<train::BottomCache> cache_;  // null: no bottom cache
};

}  // namespace muninn::model
