#include "muninn/model/huginn_writer.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "muninn/model/safetensors_writer.h"

namespace muninn::model {
namespace {

uint64_t SplitMix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string LayerPrefix(const HuginnWriterOptions& o, int32_t l) {
  if (l < o.n_prelude) return "transformer.prelude." + std::to_string(l);
  if (l < o.n_prelude + o.n_core) {
    return "transformer.core_block." + std::to_string(l - o.n_prelude);
  }
  return "transformer.coda." + std::to_string(l - o.n_prelude - o.n_core);
}

}  // namespace

Status WriteRandomHuginn(const std::string& dir, const HuginnWriterOptions& o) {
  if (o.n_embd <= 0 || o.n_head <= 0 || o.n_embd % o.n_head != 0 || o.n_ff <= 0 ||
      o.n_vocab <= 0 || o.n_core <= 0 || o.n_prelude < 0 || o.n_coda < 0) {
    return InvalidArgumentError("WriteRandomHuginn: bad dimensions");
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return InternalError("cannot create " + dir + ": " + ec.message());
  const int64_t h = o.n_embd, hd = o.n_embd / o.n_head, ff = o.n_ff;
  const int32_t n_layers = o.n_prelude + o.n_core + o.n_coda;
  if (o.write_config) {
    nlohmann::json c = {
        {"architectures", {"RavenForCausalLM"}}, {"model_type", "huginn_raven"},
        {"n_embd", h}, {"n_heads", o.n_head}, {"n_layers", n_layers},
        {"block_size", o.block_size}, {"vocab_size", o.n_vocab},
        {"padded_vocab_size", o.n_vocab}, {"tie_embeddings", true}, {"intermediate_size", ff},
        {"bias", false}, {"block_class_name", "SandwichBlock"},
        {"norm_class_name", "RMSNorm_llama"}, {"norm_eps", 1e-6}, {"mlp_class_name", "GatedMLP"},
        {"nonlin_name", "SiLU"}, {"state_init", "like-init"}, {"injection_type", "linear"},
        {"n_layers_in_recurrent_block", o.n_core}, {"mean_recurrence", o.mean_recurrence},
        {"n_layers_in_prelude", o.n_prelude}, {"n_layers_in_coda", o.n_coda},
        {"qk_bias", o.qk_bias}, {"rope_base", 50000.0}, {"torch_dtype", "float32"}};
    std::ofstream f(dir + "/config.json");
    f << c.dump(1);
    if (!f) return InternalError("cannot write " + dir + "/config.json");
  }
  SafetensorsWriter w;
  uint64_t k = 0;
  auto add = [&](const std::string& name, const Shape& shape, double scale, double offset,
                 bool adapter = false) -> Status {
    const uint64_t index = k++;
    std::vector<float> v(static_cast<size_t>(shape.numel()));
    const uint64_t base = (o.seed << 40) + (index << 28);
    for (size_t i = 0; i < v.size(); ++i) {
      const uint64_t z = SplitMix64(base + i);
      double x = offset + scale * (static_cast<double>(z >> 11) * 0x1.0p-53 * 2.0 - 1.0);
      if (adapter && static_cast<int64_t>(i) % (2 * h) < h) x *= o.state_damp;
      v[i] = static_cast<float>(x);
    }
    ASSIGN_OR_RETURN(Tensor t, Tensor::FromVector(shape, v));
    return w.AddTensor(name, t);
  };
  const double s_in = std::sqrt(3.0 / h), s_ff = std::sqrt(3.0 / ff), s_ad = std::sqrt(3.0 / (2 * h));
  RETURN_IF_ERROR(add("transformer.wte.weight", Shape{o.n_vocab, h}, 0.5, 0.0));
  RETURN_IF_ERROR(add("transformer.adapter.weight", Shape{h, 2 * h}, 2 * s_ad, 0.0, true));
  RETURN_IF_ERROR(add("transformer.ln_f.weight", Shape{h}, 0.1, 1.0));
  for (int32_t l = 0; l < n_layers; ++l) {
    const std::string p = LayerPrefix(o, l);
    RETURN_IF_ERROR(add(p + ".norm_1.weight", Shape{h}, 0.1, 1.0));
    RETURN_IF_ERROR(add(p + ".attn.Wqkv.weight", Shape{3 * h, h}, s_in, 0.0));
    if (o.qk_bias) {
      RETURN_IF_ERROR(add(p + ".attn.qk_bias", Shape{2, 1, o.n_head, hd}, 0.1, 0.0));
    } else {
      ++k;
    }
    RETURN_IF_ERROR(add(p + ".attn.proj.weight", Shape{h, h}, s_in, 0.0));
    RETURN_IF_ERROR(add(p + ".norm_2.weight", Shape{h}, 0.1, 1.0));
    RETURN_IF_ERROR(add(p + ".mlp.fc.weight", Shape{2 * ff, h}, s_in, 0.0));
    RETURN_IF_ERROR(add(p + ".mlp.proj.weight", Shape{h, ff}, s_ff, 0.0));
    RETURN_IF_ERROR(add(p + ".norm_3.weight", Shape{h}, 0.1, 1.0));
    RETURN_IF_ERROR(add(p + ".norm_4.weight", Shape{h}, 0.1, 1.0));
  }
  return w.WriteFile(dir + "/model.safetensors");
}

}  // namespace muninn::model
