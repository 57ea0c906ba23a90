// LoRA adapters for fine-tuning the upper layers of a llama model (issue 12, specs/training.md):
// which matrices and layers train (LoraConfig), and the trainable parameters themselves
// (LoraParams: LoRA A/B of every target matrix of every trained layer, plus, optionally, the
// trained layers' RMSNorm weights), all in one flat f32 arena so that the optimizer, gradient
// clipping, checkpoints and the data-parallel reduction see one array. Optionally the arena ends
// with per-head memory logit biases ("memory gates", specs/memory_modes.md §4 (c)) of trained
// layers that read memory: b [n_head] added to every memory key's score
// (AttentionParams::mem_bias), initialised to 0 (= no gate); they are not LoRA and travel outside
// PEFT's files (peft_adapter.h).
//
// LoRA follows Hugging Face PEFT: a target matrix W [n_out, n_in] becomes
//   y = x · Wᵀ + (alpha / rank) · (drop(x) · Aᵀ) · Bᵀ,   A [rank, n_in], B [n_out, rank]
// (core/include/muninn/core/backward.h, LoraForward). PEFT's default initialisation is A from
// kaiming_uniform(a = √5), i.e. uniform in ±1/√n_in, and B = 0, so training starts at the base
// model.
//
// Thread-compatible value types.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/model/model.h"

namespace muninn::model {

// The seven matrices of a llama block a LoRA may target, in PEFT's module names.
enum class LoraTarget : uint8_t { kQ, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int kNumLoraTargets = 7;

// "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj".
std::string_view LoraTargetName(LoraTarget t);
// The PEFT module path inside a layer: "self_attn.q_proj", ..., "mlp.down_proj".
std::string_view LoraTargetModule(LoraTarget t);
// Accepts the PEFT names and the short forms q, k, v, o, gate, up, down.
StatusOr<LoraTarget> ParseLoraTarget(std::string_view name);
// A comma-separated list ("q,k,v,o"); InvalidArgument for an unknown or repeated name.
StatusOr<std::vector<LoraTarget>> ParseLoraTargets(std::string_view list);

struct LoraConfig {
  int32_t rank = 16;
  float alpha = 32.0f;
  float dropout = 0.0f;  // inverted dropout on the LoRA path's input, in [0, 1)
  std::vector<LoraTarget> targets = {LoraTarget::kQ, LoraTarget::kK, LoraTarget::kV,
                                     LoraTarget::kO};
  // Trained layers are [first_layer, n_layer); the layers below run forward only.
  int32_t first_layer = 0;
  // Also train the trained layers' attn_norm and ffn_norm weights (MemLong: "norm" modules).
  bool train_norms = true;
  // Layers whose memory gates train (ascending, each in [first_layer, n_layer)); empty: none.
  std::vector<int32_t> memory_gate_layers;

  float scale() const { return alpha / static_cast<float>(rank); }
  bool Targets(LoraTarget t) const;
  // InvalidArgument unless rank >= 1, alpha finite and > 0, 0 <= dropout < 1, the targets are
  // non-empty and distinct, 0 <= first_layer < n_layer, and memory_gate_layers ascending inside
  // [first_layer, n_layer).
  Status Validate(const ModelConfig& model) const;
};

// One trainable tensor inside the arena.
struct LoraTensor {
  enum class Kind : uint8_t { kLoraA, kLoraB, kAttnNorm, kFfnNorm, kMemGate };
  Kind kind = Kind::kLoraA;
  int32_t layer = 0;
  LoraTarget target = LoraTarget::kQ;  // LoRA tensors only
  int64_t rows = 0;                    // A: rank; B: n_out; norms, gates: 1
  int64_t cols = 0;                    // A: n_in; B: rank; norms: n_embd; gates: n_head
  int64_t offset = 0;                  // first element in the arena
  int64_t size() const { return rows * cols; }
  // PEFT's name in adapter_model.safetensors, e.g.
  // "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight" or
  // "base_model.model.model.layers.3.input_layernorm.weight"; a memory gate's name in
  // memory_gates.safetensors: "model.layers.3.self_attn.memory_gate".
  std::string PeftName() const;
};

class LoraParams {
 public:
  // The layout for `config` on a model of `model_config`; A and B are zero and the norm weights
  // are copies of the model's (so a fresh adapter is the base model). InvalidArgument from
  // LoraConfig::Validate or for norm weights that are not f32 [n_embd].
  static StatusOr<LoraParams> Create(const ModelConfig& model_config, const ModelWeights& weights,
                                     const LoraConfig& config);

  // PEFT's default initialisation: every A uniform in ±1/√n_in from a counter-based generator
  // seeded with `seed` (the same seed gives the same bits everywhere), every B zero. Norm weights
  // and memory gates are left as they are (the gates come after every LoRA tensor, so adding them
  // does not change the LoRA initialisation).
  void InitPeft(uint64_t seed);

  const LoraConfig& config() const { return config_; }
  const ModelConfig& model_config() const { return model_config_; }
  const std::vector<LoraTensor>& tensors() const { return tensors_; }
  int64_t size() const { return static_cast<int64_t>(values_.size()); }
  std::span<float> values() { return values_; }
  std::span<const float> values() const { return values_; }

  // Arena offsets; -1 when the layer or target does not train.
  int64_t OffsetA(int32_t layer, LoraTarget t) const { return Find(layer, 2 * Idx(t)); }
  int64_t OffsetB(int32_t layer, LoraTarget t) const { return Find(layer, 2 * Idx(t) + 1); }
  int64_t OffsetAttnNorm(int32_t layer) const { return Find(layer, kAttnNormSlot); }
  int64_t OffsetFfnNorm(int32_t layer) const { return Find(layer, kFfnNormSlot); }
  int64_t OffsetMemGate(int32_t layer) const { return Find(layer, kMemGateSlot); }
  // The memory gates are the arena's tail [gates_offset(), size()) (size() when there are none).
  int64_t gates_offset() const { return gates_offset_; }

  // n_in and n_out of target t on this model.
  int64_t InDim(LoraTarget t) const;
  int64_t OutDim(LoraTarget t) const;

 private:
  static constexpr int kSlots = 2 * kNumLoraTargets + 3;
  static constexpr int kAttnNormSlot = 2 * kNumLoraTargets;
  static constexpr int kFfnNormSlot = 2 * kNumLoraTargets + 1;
  static constexpr int kMemGateSlot = 2 * kNumLoraTargets + 2;
  static int Idx(LoraTarget t) { return static_cast<int>(t); }
  int64_t Find(int32_t layer, int slot) const;

  ModelConfig model_config_;
  LoraConfig config_;
  std::vector<float> values_;
  std::vector<LoraTensor> tensors_;
  std::vector<int64_t> slots_;  // [n_layer][kSlots] arena offsets, -1 for none
  int64_t gates_offset_ = 0;
};

}  // namespace muninn::model
