#include "muninn/model/peft_adapter.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <vector>

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
  for (const LoraTensor& t : params.tensors()) {
    const float* v = params.values().data() + t.offset;
    std::vector<float> values(v, v + t.size());
    const ModelConfig& mc = params.model_config();
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
