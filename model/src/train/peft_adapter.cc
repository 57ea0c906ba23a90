#include "muninn/model/peft_adapter.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <vector>

#include "muninn/core/check.h"
#include "muninn/core/quant.h"
#include "muninn/model/safetensors_file.h"
#include "muninn/model/safetensors_writer.h"
#include "train/atomic_file.h"
#include "train/qk_order.h"

namespace muninn::model {

using train::PermutedQk;
using train::PermuteHeadRows;

namespace {

constexpr const char* kNormModules[] = {"input_layernorm", "post_attention_layernorm"};
constexpr const char* kGatesFile = "memory_gates.safetensors";

// The layer of a memory gate tensor named "model.layers.N.self_attn.memory_gate", or -1.
int32_t GateLayer(const std::string& name) {
  const std::string prefix = "model.layers.", suffix = ".self_attn.memory_gate";
  if (name.size() <= prefix.size() + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return -1;
  }
  const std::string digits =
      name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.empty() || digits.size() > 6 ||
      !std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
    return -1;
  }
  return static_cast<int32_t>(std::stoi(digits));
}

}  // namespace

Status WritePeftAdapter(const LoraParams& params, const ModelWeights& weights,
                        const std::string& dir, const std::string& base_model_name) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return IoError("cannot create adapter folder " + dir + ": " + ec.message());
  const LoraConfig& c = params.config();
  nlohmann::json targets = nlohmann::json::array();
  for (LoraTarget t : c.targets) targets.push_back(std::string(LoraTargetName(t)));
  nlohmann::json layers = nlohmann::json::array();
  for (int32_t l = c.first_layer; l < params.model_config().n_layer; ++l) layers.push_back(l);
  nlohmann::json modules_to_save = nullptr;
  if (c.train_norms) modules_to_save = {kNormModules[0], kNormModules[1]};
  const nlohmann::json config = {{"peft_type", "LORA"},
                                 {"task_type", "CAUSAL_LM"},
                                 {"base_model_name_or_path", base_model_name},
                                 {"r", c.rank},
                                 {"lora_alpha", c.alpha},
                                 {"lora_dropout", c.dropout},
                                 {"target_modules", targets},
                                 {"layers_to_transform", layers},
                                 {"layers_pattern", "layers"},
                                 {"modules_to_save", modules_to_save},
                                 {"bias", "none"},
                                 {"fan_in_fan_out", false},
                                 {"inference_mode", true},
                                 {"init_lora_weights", true},
                                 {"use_rslora", false},
                                 {"use_dora", false},
                                 {"rank_pattern", nlohmann::json::object()},
                                 {"alpha_pattern", nlohmann::json::object()},
                                 {"revision", nullptr}};
  SafetensorsWriter w;
  w.SetMetadata("format", "pt");
  if (c.train_norms) {
    // The frozen layers' norms, unchanged: PEFT's loader needs every wrapped module's tensor.
    for (int32_t l = 0; l < c.first_layer; ++l) {
      const LayerWeights& lw = weights.layers[static_cast<size_t>(l)];
      const std::string p = "base_model.model.model.layers." + std::to_string(l) + ".";
      RETURN_IF_ERROR(w.AddTensor(p + kNormModules[0] + ".weight", lw.attn_norm));
      RETURN_IF_ERROR(w.AddTensor(p + kNormModules[1] + ".weight", lw.ffn_norm));
    }
  }
  SafetensorsWriter gates;
  gates.SetMetadata("format", "pt");
  std::string gate_layers;
  for (const LoraTensor& t : params.tensors()) {
    const float* v = params.values().data() + t.offset;
    std::vector<float> values(v, v + t.size());
    const ModelConfig& mc = params.model_config();
    if (t.kind == LoraTensor::Kind::kMemGate) {  // not PEFT: its own file
      ASSIGN_OR_RETURN(Tensor tensor, Tensor::FromVector(Shape{t.cols}, values));
      RETURN_IF_ERROR(gates.AddTensor(t.PeftName(), tensor));
      gate_layers += (gate_layers.empty() ? "" : ",") + std::to_string(t.layer);
      continue;
    }
    if (t.kind == LoraTensor::Kind::kLoraB && PermutedQk(mc) &&
        (t.target == LoraTarget::kQ || t.target == LoraTarget::kK)) {
      PermuteHeadRows(values.data(), train::QkHeads(mc, t.target), mc.head_dim, t.cols,
                      /*gguf_to_hf=*/true);
    }
    const Shape shape =
        (t.kind == LoraTensor::Kind::kAttnNorm || t.kind == LoraTensor::Kind::kFfnNorm)
            ? Shape{t.cols}
            : Shape{t.rows, t.cols};
    ASSIGN_OR_RETURN(Tensor tensor, Tensor::FromVector(shape, values));
    RETURN_IF_ERROR(w.AddTensor(t.PeftName(), tensor));
  }
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, w.Serialize());
  RETURN_IF_ERROR(train::WriteFileAtomic(dir + "/adapter_model.safetensors", bytes));
  const std::string gates_path = dir + "/" + kGatesFile;
  if (!gate_layers.empty()) {
    gates.SetMetadata("muninn", "memory_gates");
    gates.SetMetadata("layers", gate_layers);
    gates.SetMetadata("n_head", std::to_string(params.model_config().n_head));
    gates.SetMetadata("definition",
                      "per-head memory logit bias b[h]: score(memory key j) = scale*q.k_j + b[h]");
    ASSIGN_OR_RETURN(std::vector<uint8_t> gate_bytes, gates.Serialize());
    RETURN_IF_ERROR(train::WriteFileAtomic(gates_path, gate_bytes));
  } else if (std::filesystem::exists(gates_path, ec)) {
    // A folder rewritten without gates must not keep an older run's.
    std::filesystem::remove(gates_path, ec);
    if (ec) return IoError("cannot remove the stale " + gates_path + ": " + ec.message());
  }
  const std::string text = config.dump(2) + "\n";
  return train::WriteFileAtomic(
      dir + "/adapter_config.json",
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

StatusOr<LoraParams> ReadPeftAdapter(const std::string& dir, const ModelConfig& model_config,
                                     const ModelWeights& weights) {
  const std::string config_path = dir + "/adapter_config.json";
  std::ifstream in(config_path);
  if (!in) return NotFoundError("no adapter_config.json in " + dir + " (not a PEFT folder?)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError(config_path + " is not valid JSON: " + e.what());
  }
  auto bad = [&](const std::string& what) {
    return InvalidArgumentError(config_path + ": " + what);
  };
  try {
    if (j.value("peft_type", std::string()) != "LORA") return bad("peft_type must be \"LORA\"");
    for (const char* flag : {"use_dora", "use_rslora", "fan_in_fan_out"}) {
      if (j.contains(flag) && j[flag].is_boolean() && j[flag].get<bool>()) {
        return bad(std::string(flag) + " adapters are not supported");
      }
    }
    if (j.contains("bias") && j["bias"].is_string() && j["bias"].get<std::string>() != "none") {
      return bad("LoRA biases are not supported (bias must be \"none\")");
    }
    for (const char* pattern : {"rank_pattern", "alpha_pattern"}) {
      if (j.contains(pattern) && j[pattern].is_object() && !j[pattern].empty()) {
        return bad(std::string(pattern) + " (per-module rank or alpha) is not supported");
      }
    }
    LoraConfig c;
    if (!j.contains("r") || !j["r"].is_number_integer()) return bad("needs an integer r");
    c.rank = j["r"].get<int32_t>();
    if (!j.contains("lora_alpha") || !j["lora_alpha"].is_number()) return bad("needs lora_alpha");
    c.alpha = j["lora_alpha"].get<float>();
    c.dropout = j.contains("lora_dropout") && j["lora_dropout"].is_number()
                    ? j["lora_dropout"].get<float>()
                    : 0.0f;
    c.targets.clear();
    const nlohmann::json& tm = j["target_modules"];
    std::vector<std::string> names;
    if (tm.is_string()) {
      names.push_back(tm.get<std::string>());
    } else if (tm.is_array()) {
      for (const auto& x : tm) names.push_back(x.get<std::string>());
    } else {
      return bad("target_modules must be a list of module names");
    }
    std::sort(names.begin(), names.end());
    for (const std::string& n : names) {
      ASSIGN_OR_RETURN(LoraTarget t, ParseLoraTarget(n));
      c.targets.push_back(t);
    }
    std::vector<int32_t> layers;
    const nlohmann::json ltt = j.value("layers_to_transform", nlohmann::json());
    if (ltt.is_number_integer()) {
      layers.push_back(ltt.get<int32_t>());
    } else if (ltt.is_array()) {
      for (const auto& x : ltt) layers.push_back(x.get<int32_t>());
    } else {
      for (int32_t l = 0; l < model_config.n_layer; ++l) layers.push_back(l);
    }
    std::sort(layers.begin(), layers.end());
    if (layers.empty()) return bad("layers_to_transform is empty");
    for (size_t i = 0; i < layers.size(); ++i) {
      if (layers[i] != layers[0] + static_cast<int32_t>(i) ||
          layers.back() != model_config.n_layer - 1) {
        return bad("layers_to_transform must be a top range [first, n_layer) of the model's " +
                   std::to_string(model_config.n_layer) + " layers");
      }
    }
    c.first_layer = layers[0];
    c.train_norms = false;
    const nlohmann::json mts = j.value("modules_to_save", nlohmann::json());
    if (mts.is_array()) {
      std::set<std::string> m;
      for (const auto& x : mts) m.insert(x.get<std::string>());
      for (const std::string& x : m) {
        if (x != kNormModules[0] && x != kNormModules[1]) {
          return bad("modules_to_save '" + x + "' is not supported (only the layer norms)");
        }
      }
      c.train_norms = !m.empty();
    }
    // Memory gates (muninn's own file beside PEFT's): one [n_head] tensor per gated layer.
    const std::string gates_path = dir + "/" + kGatesFile;
    std::unique_ptr<SafetensorsFile> gates;
    std::error_code ec;
    if (std::filesystem::exists(gates_path, ec)) {
      ASSIGN_OR_RETURN(gates, SafetensorsFile::Open(gates_path));
      for (const TensorInfo& info : gates->tensors()) {
        const int32_t l = GateLayer(info.name);
        if (l < c.first_layer || l >= model_config.n_layer) {
          return InvalidArgumentError(gates_path + ": tensor " + info.name +
                                      " is not model.layers.N.self_attn.memory_gate of a LoRA "
                                      "layer [" + std::to_string(c.first_layer) + ", " +
                                      std::to_string(model_config.n_layer) + ")");
        }
        c.memory_gate_layers.push_back(l);
      }
      std::sort(c.memory_gate_layers.begin(), c.memory_gate_layers.end());
      if (std::adjacent_find(c.memory_gate_layers.begin(), c.memory_gate_layers.end()) !=
          c.memory_gate_layers.end()) {
        return InvalidArgumentError(gates_path + " holds a layer's memory gate twice");
      }
    }
    ASSIGN_OR_RETURN(LoraParams p, LoraParams::Create(model_config, weights, c));
    const std::string st_path = dir + "/adapter_model.safetensors";
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(st_path));
    // Norms of layers below the trained range: only the base model's own values are accepted.
    for (int32_t l = 0; l < c.first_layer; ++l) {
      const LayerWeights& lw = weights.layers[static_cast<size_t>(l)];
      const Tensor* base[] = {&lw.attn_norm, &lw.ffn_norm};
      for (int k = 0; k < 2; ++k) {
        const std::string name = "base_model.model.model.layers." + std::to_string(l) + "." +
                                 kNormModules[k] + ".weight";
        const TensorInfo* info = file->FindTensor(name);
        if (info == nullptr) continue;
        ASSIGN_OR_RETURN(Tensor t, file->GetTensor(*info));
        const int64_t n = model_config.n_embd;
        if (!(t.shape() == Shape{n}) || !CanDequantize(t.dtype())) {
          return InvalidArgumentError(st_path + ": " + name + " is not a [n_embd] float tensor");
        }
        std::vector<float> v(static_cast<size_t>(n));
        DequantizeRow(t.dtype(), t.data(), v.data(), n);
        if (std::memcmp(v.data(), base[k]->data(), v.size() * sizeof(float)) != 0) {
          return InvalidArgumentError(st_path + ": " + name +
                                      " differs from the base model, but "
                                      "layer " +
                                      std::to_string(l) +
                                      " is below the adapter's "
                                      "LoRA layers; muninn applies norms of LoRA layers only");
        }
      }
    }
    for (const LoraTensor& t : p.tensors()) {
      const std::string name = t.PeftName();
      if (t.kind == LoraTensor::Kind::kMemGate) {
        const TensorInfo* info = gates->FindTensor(name);
        MUNINN_CHECK(info != nullptr);
        ASSIGN_OR_RETURN(Tensor tensor, gates->GetTensor(*info));
        if (!(tensor.shape() == Shape{t.cols}) || !CanDequantize(tensor.dtype())) {
          return InvalidArgumentError(gates_path + ": " + name + " must be a [n_head] = [" +
                                      std::to_string(t.cols) + "] float tensor, got " +
                                      tensor.DebugString());
        }
        float* dst = p.values().data() + t.offset;
        DequantizeRow(tensor.dtype(), tensor.data(), dst, t.size());
        for (int64_t i = 0; i < t.size(); ++i) {
          if (!std::isfinite(dst[i])) {
            return InvalidArgumentError(gates_path + ": " + name + " has a non-finite value");
          }
        }
        continue;
      }
      const bool norm =
          t.kind == LoraTensor::Kind::kAttnNorm || t.kind == LoraTensor::Kind::kFfnNorm;
      const TensorInfo* info = file->FindTensor(name);
      if (info == nullptr) {
        if (norm) continue;  // modules_to_save without this layer's copy: the base weight
        return NotFoundError(st_path + " has no tensor " + name);
      }
      ASSIGN_OR_RETURN(Tensor tensor, file->GetTensor(*info));
      const Shape want = norm ? Shape{t.cols} : Shape{t.rows, t.cols};
      if (!(tensor.shape() == want)) {
        return InvalidArgumentError(st_path + ": " + name + " has shape " +
                                    tensor.shape().ToString() + ", expected " + want.ToString());
      }
      if (!CanDequantize(tensor.dtype())) {
        return InvalidArgumentError(st_path + ": " + name + " has an unsupported dtype");
      }
      DequantizeRow(tensor.dtype(), tensor.data(), p.values().data() + t.offset, t.size());
      if (t.kind == LoraTensor::Kind::kLoraB && PermutedQk(model_config) &&
          (t.target == LoraTarget::kQ || t.target == LoraTarget::kK)) {
        PermuteHeadRows(p.values().data() + t.offset, train::QkHeads(model_config, t.target),
                        model_config.head_dim, t.cols, /*gguf_to_hf=*/false);
      }
    }
    return p;
  } catch (const nlohmann::json::exception& e) {
    return bad(std::string("unexpected value: ") + e.what());
  }
}

}  // namespace muninn::model
