#include "muninn/model/lora.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace muninn::model {

namespace {

constexpr LoraTarget kAllTargets[] = {LoraTarget::kQ,   LoraTarget::kK,    LoraTarget::kV,
                                      LoraTarget::kO,   LoraTarget::kGate, LoraTarget::kUp,
                                      LoraTarget::kDown};

uint64_t SplitMix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

std::string_view LoraTargetName(LoraTarget t) {
  switch (t) {
    case LoraTarget::kQ:
      return "q_proj";
    case LoraTarget::kK:
      return "k_proj";
    case LoraTarget::kV:
      return "v_proj";
    case LoraTarget::kO:
      return "o_proj";
    case LoraTarget::kGate:
      return "gate_proj";
    case LoraTarget::kUp:
      return "up_proj";
    case LoraTarget::kDown:
      return "down_proj";
  }
  return "?";
}

std::string_view LoraTargetModule(LoraTarget t) {
  switch (t) {
    case LoraTarget::kQ:
      return "self_attn.q_proj";
    case LoraTarget::kK:
      return "self_attn.k_proj";
    case LoraTarget::kV:
      return "self_attn.v_proj";
    case LoraTarget::kO:
      return "self_attn.o_proj";
    case LoraTarget::kGate:
      return "mlp.gate_proj";
    case LoraTarget::kUp:
      return "mlp.up_proj";
    case LoraTarget::kDown:
      return "mlp.down_proj";
  }
  return "?";
}

StatusOr<LoraTarget> ParseLoraTarget(std::string_view name) {
  for (LoraTarget t : kAllTargets) {
    std::string_view full = LoraTargetName(t);
    std::string_view short_name = full.substr(0, full.size() - 5);  // drop "_proj"
    if (name == full || name == short_name) return t;
  }
  return InvalidArgumentError("unknown LoRA target '" + std::string(name) +
                              "'; use q, k, v, o, gate, up or down (or q_proj, ..., down_proj)");
}

StatusOr<std::vector<LoraTarget>> ParseLoraTargets(std::string_view list) {
  std::vector<LoraTarget> out;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t end = list.find(',', pos);
    if (end == std::string_view::npos) end = list.size();
    ASSIGN_OR_RETURN(LoraTarget t, ParseLoraTarget(list.substr(pos, end - pos)));
    if (std::find(out.begin(), out.end(), t) != out.end()) {
      return InvalidArgumentError("LoRA target '" + std::string(LoraTargetName(t)) +
                                  "' is listed twice in '" + std::string(list) + "'");
    }
    out.push_back(t);
    pos = end + 1;
  }
  return out;
}

bool LoraConfig::Targets(LoraTarget t) const {
  return std::find(targets.begin(), targets.end(), t) != targets.end();
}

Status LoraConfig::Validate(const ModelConfig& model) const {
  if (rank < 1) return InvalidArgumentError("LoRA rank must be >= 1, got " + std::to_string(rank));
  if (!(alpha > 0.0f) || !std::isfinite(alpha)) {
    return InvalidArgumentError("LoRA alpha must be finite and > 0, got " + std::to_string(alpha));
  }
  if (!(dropout >= 0.0f) || !(dropout < 1.0f)) {
    return InvalidArgumentError("LoRA dropout must be in [0, 1), got " + std::to_string(dropout));
  }
  if (targets.empty()) return InvalidArgumentError("LoRA needs at least one target matrix");
  for (size_t i = 0; i < targets.size(); ++i) {
    for (size_t j = i + 1; j < targets.size(); ++j) {
      if (targets[i] == targets[j]) {
        return InvalidArgumentError("LoRA target '" + std::string(LoraTargetName(targets[i])) +
                                    "' is listed twice");
      }
    }
  }
  if (first_layer < 0 || first_layer >= model.n_layer) {
    return InvalidArgumentError("first trained layer " + std::to_string(first_layer) +
                                " is outside the model's layers [0, " +
                                std::to_string(model.n_layer) + ")");
  }
  for (size_t i = 0; i < memory_gate_layers.size(); ++i) {
    const int32_t l = memory_gate_layers[i];
    if (l < first_layer || l >= model.n_layer ||
        (i > 0 && l <= memory_gate_layers[i - 1])) {
      return InvalidArgumentError("memory gate layer " + std::to_string(l) +
                                  " is not a trained layer [" + std::to_string(first_layer) +
                                  ", " + std::to_string(model.n_layer) +
                                  ") or the list is not ascending and distinct");
    }
  }
  return Status::Ok();
}

std::string LoraTensor::PeftName() const {
  const std::string layer_prefix = "base_model.model.model.layers." + std::to_string(layer) + ".";
  switch (kind) {
    case Kind::kLoraA:
      return layer_prefix + std::string(LoraTargetModule(target)) + ".lora_A.weight";
    case Kind::kLoraB:
      return layer_prefix + std::string(LoraTargetModule(target)) + ".lora_B.weight";
    case Kind::kAttnNorm:
      return layer_prefix + "input_layernorm.weight";
    case Kind::kFfnNorm:
      return layer_prefix + "post_attention_layernorm.weight";
    case Kind::kMemGate:
      return "model.layers." + std::to_string(layer) + ".self_attn.memory_gate";
  }
  return "";
}

int64_t LoraParams::InDim(LoraTarget t) const {
  const int64_t n_q = int64_t{model_config_.n_head} * model_config_.head_dim;
  switch (t) {
    case LoraTarget::kQ:
    case LoraTarget::kK:
    case LoraTarget::kV:
    case LoraTarget::kGate:
    case LoraTarget::kUp:
      return model_config_.n_embd;
    case LoraTarget::kO:
      return n_q;
    case LoraTarget::kDown:
      return model_config_.n_ff;
  }
  return 0;
}

int64_t LoraParams::OutDim(LoraTarget t) const {
  const int64_t n_q = int64_t{model_config_.n_head} * model_config_.head_dim;
  const int64_t n_kv = int64_t{model_config_.n_head_kv} * model_config_.head_dim;
  switch (t) {
    case LoraTarget::kQ:
      return n_q;
    case LoraTarget::kK:
    case LoraTarget::kV:
      return n_kv;
    case LoraTarget::kO:
    case LoraTarget::kDown:
      return model_config_.n_embd;
    case LoraTarget::kGate:
    case LoraTarget::kUp:
      return model_config_.n_ff;
  }
  return 0;
}

int64_t LoraParams::Find(int32_t layer, int slot) const {
  if (layer < 0 || layer >= model_config_.n_layer) return -1;
  return slots_[static_cast<size_t>(layer) * kSlots + static_cast<size_t>(slot)];
}

StatusOr<LoraParams> LoraParams::Create(const ModelConfig& model_config,
                                        const ModelWeights& weights, const LoraConfig& config) {
  RETURN_IF_ERROR(config.Validate(model_config));
  if (weights.layers.size() != static_cast<size_t>(model_config.n_layer)) {
    return InvalidArgumentError("the weights have " + std::to_string(weights.layers.size()) +
                                " layers, the config " + std::to_string(model_config.n_layer));
  }
  LoraParams p;
  p.model_config_ = model_config;
  p.config_ = config;
  p.slots_.assign(static_cast<size_t>(model_config.n_layer) * kSlots, -1);
  int64_t offset = 0;
  auto add = [&](LoraTensor t, int slot) {
    t.offset = offset;
    offset += t.size();
    p.slots_[static_cast<size_t>(t.layer) * kSlots + static_cast<size_t>(slot)] = t.offset;
    p.tensors_.push_back(t);
  };
  const int64_t n_embd = model_config.n_embd;
  for (int32_t l = config.first_layer; l < model_config.n_layer; ++l) {
    // Targets in the model's order (q, k, v, o, gate, up, down), whatever the config's order.
    for (LoraTarget t : kAllTargets) {
      if (!config.Targets(t)) continue;
      add(LoraTensor{LoraTensor::Kind::kLoraA, l, t, config.rank, p.InDim(t), 0}, 2 * Idx(t));
      add(LoraTensor{LoraTensor::Kind::kLoraB, l, t, p.OutDim(t), config.rank, 0}, 2 * Idx(t) + 1);
    }
    if (config.train_norms) {
      add(LoraTensor{LoraTensor::Kind::kAttnNorm, l, LoraTarget::kQ, 1, n_embd, 0}, kAttnNormSlot);
      add(LoraTensor{LoraTensor::Kind::kFfnNorm, l, LoraTarget::kQ, 1, n_embd, 0}, kFfnNormSlot);
    }
  }
  // The memory gates last (zeros: no gate), so the LoRA layout before them never changes.
  p.gates_offset_ = offset;
  for (int32_t l : config.memory_gate_layers) {
    add(LoraTensor{LoraTensor::Kind::kMemGate, l, LoraTarget::kQ, 1, model_config.n_head, 0},
        kMemGateSlot);
  }
  p.values_.assign(static_cast<size_t>(offset), 0.0f);
  for (const LoraTensor& t : p.tensors_) {
    if (t.kind != LoraTensor::Kind::kAttnNorm && t.kind != LoraTensor::Kind::kFfnNorm) continue;
    const LayerWeights& lw = weights.layers[static_cast<size_t>(t.layer)];
    const Tensor& w = t.kind == LoraTensor::Kind::kAttnNorm ? lw.attn_norm : lw.ffn_norm;
    if (!w.defined() || w.dtype() != DType::kF32 || !(w.shape() == Shape{n_embd}) ||
        !w.is_contiguous()) {
      return InvalidArgumentError("layer " + std::to_string(t.layer) +
                                  " norm weight must be a contiguous f32 [n_embd] host tensor");
    }
    std::memcpy(p.values_.data() + t.offset, w.data(), static_cast<size_t>(n_embd) * sizeof(float));
  }
  return p;
}

void LoraParams::InitPeft(uint64_t seed) {
  for (size_t k = 0; k < tensors_.size(); ++k) {
    const LoraTensor& t = tensors_[k];
    float* v = values_.data() + t.offset;
    if (t.kind == LoraTensor::Kind::kLoraB) {
      std::fill(v, v + t.size(), 0.0f);
    } else if (t.kind == LoraTensor::Kind::kLoraA) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(t.cols));
      const uint64_t base = (seed << 40) + (static_cast<uint64_t>(k) << 28);
      for (int64_t i = 0; i < t.size(); ++i) {
        const uint64_t z = SplitMix64(base + static_cast<uint64_t>(i));
        const double u = static_cast<double>(z >> 11) * 0x1.0p-53 * 2.0 - 1.0;
        v[i] = static_cast<float>(bound * u);
      }
    }
  }
}

}  // namespace muninn::model
