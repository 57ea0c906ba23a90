// `muninn model info MODEL [--json]`: what a checkpoint holds, read without loading weights.
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "command_registry.h"
#include "muninn/model/checkpoint.h"
#include "muninn/model/model_hparams.h"

namespace muninn::tools {
namespace {

using model::Checkpoint;
using model::MetadataType;
using model::MetadataValue;

constexpr size_t kMaxArrayItems = 8;  // arrays (vocabularies!) are summarised, not dumped

// A JSON rendering of a metadata value; long arrays keep their first items plus the count.
nlohmann::json ValueToJson(const MetadataValue& v) {
  if (!v.is_array()) {
    switch (v.type()) {
      case MetadataType::kString: return std::string(*v.AsString());
      case MetadataType::kBool: return *v.AsBool();
      case MetadataType::kF32:
      case MetadataType::kF64: return *v.AsFloat();
      default:
        if (auto i = v.AsInt(); i.ok()) return *i;
        return *v.AsUint();
    }
  }
  nlohmann::json items = nlohmann::json::array();
  const size_t n = std::min(v.array_size(), kMaxArrayItems);
  if (v.element_type() == MetadataType::kString) {
    for (size_t i = 0; i < n; ++i) items.push_back(v.string_elements()[i]);
  } else if (v.element_type() == MetadataType::kArray) {
    for (size_t i = 0; i < n; ++i) items.push_back(ValueToJson(v.array_elements()[i]));
  } else if (auto f = v.AsFloatArray(); f.ok()) {
    for (size_t i = 0; i < n; ++i) items.push_back((*f)[i]);
  } else if (v.element_type() == MetadataType::kBool) {
    for (size_t i = 0; i < n; ++i) items.push_back(v.raw_elements()[i] != 0);
  }
  return {{"size", v.array_size()}, {"items", items}};
}

nlohmann::json HParamsToJson(const model::ModelHParams& hp) {
  nlohmann::json j = {{"arch", std::string(model::ModelArchName(hp.arch))},
                      {"n_vocab", hp.n_vocab},
                      {"n_embd", hp.n_embd},
                      {"n_layer", hp.n_layer},
                      {"n_head", hp.n_head},
                      {"n_head_kv", hp.n_head_kv},
                      {"n_embd_head", hp.n_embd_head},
                      {"n_ff", hp.n_ff},
                      {"n_ctx_train", hp.n_ctx_train},
                      {"norm_eps", hp.norm_eps},
                      {"tied_embeddings", hp.tied_embeddings}};
  if (hp.arch == model::ModelArch::kBert) j["n_token_types"] = hp.n_token_types;
  if (hp.use_rope) {
    static constexpr const char* kScaling[] = {"none", "linear", "ntk", "yarn"};
    j["rope"] = {{"freq_base", hp.rope.freq_base},
                 {"n_rot", hp.rope.n_rot},
                 {"layout", hp.rope.layout == RopeLayout::kHalves ? "halves" : "interleaved"},
                 {"scaling", kScaling[static_cast<int>(hp.rope.scaling)]},
                 {"factor", hp.rope.factor},
                 {"original_ctx", hp.rope.original_ctx}};
  }
  return j;
}

int RunInfo(const std::string& path, bool json) {
  StatusOr<std::unique_ptr<Checkpoint>> opened = Checkpoint::Open(path);
  if (!opened.ok()) {
    std::fprintf(stderr, "muninn model info: %s\n", opened.status().ToString().c_str());
    return 1;
  }
  const Checkpoint& c = **opened;
  struct TypeStats {
    size_t count = 0;
    uint64_t bytes = 0;
  };
  std::map<std::string, TypeStats> histogram;
  uint64_t params = 0;
  for (const model::TensorInfo& t : c.tensors()) {
    histogram[t.type_name].count++;
    histogram[t.type_name].bytes += t.nbytes;
    params += static_cast<uint64_t>(t.shape.numel());
  }
  StatusOr<model::ModelHParams> hp = model::ReadHParams(c);
  Status weights = hp.ok() ? model::ValidateWeights(c, *hp) : Status::Ok();

  if (json) {
    nlohmann::json j;
    j["path"] = c.path();
    j["format"] = std::string(model::CheckpointFormatName(c.format()));
    j["architecture"] = c.architecture();
    j["file_size"] = c.file_size();
    j["file_count"] = c.file_count();
    j["tensor_count"] = c.tensors().size();
    j["parameter_count"] = params;
    for (const auto& [type, s] : histogram) {
      j["tensor_types"][type] = {{"count", s.count}, {"bytes", s.bytes}};
    }
    if (hp.ok()) {
      j["hparams"] = HParamsToJson(*hp);
    } else {
      j["hparams_error"] = hp.status().ToString();
    }
    if (!weights.ok()) j["weights_error"] = weights.ToString();
    nlohmann::json meta = nlohmann::json::object();
    for (const model::MetadataEntry& e : c.metadata()) {
      meta[e.key] = {{"type", e.value.TypeName()}, {"value", ValueToJson(e.value)}};
    }
    j["metadata"] = std::move(meta);
    // Replace invalid UTF-8 (metadata strings are untrusted) instead of throwing.
    std::printf("%s\n",
                j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("path:         %s\n", c.path().c_str());
    std::printf("format:       %s (%zu file%s, %.1f MiB)\n",
                std::string(model::CheckpointFormatName(c.format())).c_str(), c.file_count(),
                c.file_count() == 1 ? "" : "s", static_cast<double>(c.file_size()) / (1 << 20));
    std::printf("architecture: %s\n", c.architecture().c_str());
    std::printf("tensors:      %zu (%.1fM parameters)\n", c.tensors().size(),
                static_cast<double>(params) / 1e6);
    for (const auto& [type, s] : histogram) {
      std::printf("  %-8s %5zu tensors %10.1f MiB\n", type.c_str(), s.count,
                  static_cast<double>(s.bytes) / (1 << 20));
    }
    if (hp.ok()) {
      std::printf("hyperparameters:\n");
      std::string text = hp->ToString();
      size_t start = 0;
      while (start < text.size()) {
        const size_t end = text.find('\n', start);
        std::printf("  %s\n", text.substr(start, end - start).c_str());
        start = end == std::string::npos ? text.size() : end + 1;
      }
    } else {
      std::printf("hyperparameters: unavailable: %s\n", hp.status().ToString().c_str());
    }
    if (!weights.ok()) std::printf("weights: %s\n", weights.ToString().c_str());
    std::printf("metadata (%zu keys):\n", c.metadata().size());
    for (const model::MetadataEntry& e : c.metadata()) {
      std::string value = e.value.ToString(4);
      if (value.size() > 100) value = value.substr(0, 97) + "...";
      std::printf("  %-44s %-16s %s\n", e.key.c_str(), e.value.TypeName().c_str(),
                  value.c_str());
    }
  }
  return hp.ok() && weights.ok() ? 0 : 2;
}

}  // namespace

void RegisterModelCommands(CLI::App& app, CommandContext& ctx) {
  auto* model = app.add_subcommand("model", "Inspect model checkpoints (GGUF, Hugging Face)");
  model->require_subcommand(1);
  auto* info = model->add_subcommand(
      "info", "Architecture, hyperparameters, tensor types and metadata of a checkpoint");
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  info->add_option("MODEL", *path, "A .gguf file or a Hugging Face model folder")->required();
  info->add_flag("--json", *json, "Print JSON");
  info->callback([&ctx, path, json] { ctx.exit_code = RunInfo(*path, *json); });
}

}  // namespace muninn::tools
