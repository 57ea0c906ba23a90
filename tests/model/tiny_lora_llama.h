// The tiny random llama of the LoRA goldens (tools/reference/make_lora_goldens.py), shared by the
// model and tools tests. Every value comes from a counter-based generator (splitmix64 of seed,
// tensor index and element index, mapped to a uniform in [-1, 1)) that the reference script
// implements identically, so no weights are committed: the tests write the Hugging Face folder
// (config.json + F32 model.safetensors) themselves.
//
// Model: vocabulary 256, n_embd 32, 3 layers, 4 heads of 8 over 2 KV heads (GQA), MLP 48,
// RoPE base 10000 (rotate-half), RMSNorm eps 1e-5, untied head.
// Adapter: LoRA rank 4, alpha 8 on all seven matrices of layers 1 and 2, plus their norm weights;
// A and B both random (B = 0 would leave A without gradient).
// Data: blocks of 24 tokens (ids = seq[0, 24), labels = seq[1, 25) with every position t ≡ 2
// (mod 5) set to -100).
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "muninn/core/check.h"
#include "muninn/core/cross_entropy.h"
#include "muninn/core/tensor.h"
#include "muninn/model/gguf_writer.h"
#include "muninn/model/lora.h"
#include "muninn/model/metadata_value.h"
#include "muninn/model/safetensors_writer.h"

namespace muninn::model::tiny_lora {

inline constexpr uint64_t kSeed = 12;
inline constexpr int kVocab = 256, kEmbd = 32, kLayers = 3, kHeads = 4, kHeadsKv = 2, kHd = 8,
                     kFf = 48, kBlock = 24;
inline constexpr int kRank = 4, kFirstLayer = 1;
inline constexpr float kAlpha = 8.0f;

inline uint64_t SplitMix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Element i of generator stream k: splitmix64(seed·2^40 + k·2^28 + i).
inline uint64_t Raw(uint64_t k, uint64_t i) { return SplitMix64((kSeed << 40) + (k << 28) + i); }

// n values offset + scale · u, u uniform in [-1, 1), from stream k (computed in double).
inline std::vector<float> Uniform(uint64_t k, int64_t n, double scale, double offset = 0.0) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double u =
        static_cast<double>(Raw(k, static_cast<uint64_t>(i)) >> 11) * 0x1.0p-53 * 2.0 - 1.0;
    v[static_cast<size_t>(i)] = static_cast<float>(offset + scale * u);
  }
  return v;
}

struct Spec {
  std::string name;
  std::vector<int64_t> shape;
  double scale;
  double offset;
};

// The model's tensors in generator order (stream k = index); the script has the same table.
inline std::vector<Spec> ModelSpecs() {
  const double s_e = std::sqrt(3.0 / kEmbd), s_q = std::sqrt(3.0 / (kHeads * kHd)),
               s_f = std::sqrt(3.0 / kFf);
  std::vector<Spec> s = {{"model.embed_tokens.weight", {kVocab, kEmbd}, 1.0, 0.0},
                         {"model.norm.weight", {kEmbd}, 0.1, 1.0},
                         {"lm_head.weight", {kVocab, kEmbd}, 0.5, 0.0}};
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    s.push_back({p + "input_layernorm.weight", {kEmbd}, 0.1, 1.0});
    s.push_back({p + "self_attn.q_proj.weight", {kHeads * kHd, kEmbd}, 2 * s_e, 0.0});
    s.push_back({p + "self_attn.k_proj.weight", {kHeadsKv * kHd, kEmbd}, 2 * s_e, 0.0});
    s.push_back({p + "self_attn.v_proj.weight", {kHeadsKv * kHd, kEmbd}, s_e, 0.0});
    s.push_back({p + "self_attn.o_proj.weight", {kEmbd, kHeads * kHd}, s_q, 0.0});
    s.push_back({p + "post_attention_layernorm.weight", {kEmbd}, 0.1, 1.0});
    s.push_back({p + "mlp.gate_proj.weight", {kFf, kEmbd}, s_e, 0.0});
    s.push_back({p + "mlp.up_proj.weight", {kFf, kEmbd}, s_e, 0.0});
    s.push_back({p + "mlp.down_proj.weight", {kEmbd, kFf}, s_f, 0.0});
  }
  return s;
}

// Writes config.json and model.safetensors into `dir` (created).
inline void WriteModel(const std::string& dir) {
  std::filesystem::create_directories(dir);
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                           {"model_type", "llama"},
                           {"vocab_size", kVocab},
                           {"hidden_size", kEmbd},
                           {"num_hidden_layers", kLayers},
                           {"num_attention_heads", kHeads},
                           {"num_key_value_heads", kHeadsKv},
                           {"head_dim", kHd},
                           {"intermediate_size", kFf},
                           {"max_position_embeddings", 128},
                           {"rms_norm_eps", 1e-5},
                           {"rope_theta", 10000.0},
                           {"tie_word_embeddings", false},
                           {"hidden_act", "silu"},
                           {"torch_dtype", "float32"}};
  std::ofstream(dir + "/config.json") << config.dump(1);
  SafetensorsWriter w;
  const std::vector<Spec> specs = ModelSpecs();
  for (size_t k = 0; k < specs.size(); ++k) {
    const Spec& s = specs[k];
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    Shape shape = s.shape.size() == 1 ? Shape{s.shape[0]} : Shape{s.shape[0], s.shape[1]};
    auto t = Tensor::FromVector(shape, Uniform(k, n, s.scale, s.offset));
    MUNINN_CHECK(t.ok()) << t.status();
    const Status st = w.AddTensor(s.name, *t);
    MUNINN_CHECK(st.ok()) << st;
  }
  const Status st = w.WriteFile(dir + "/model.safetensors");
  MUNINN_CHECK(st.ok()) << st;
}

// GPT-2's byte-level alphabet: byte b as the UTF-8 of the code point GPT-2's bytes_to_unicode()
// gives it (printable Latin-1 bytes stand for themselves, the others map to 256 + n).
inline std::vector<std::string> ByteLevelTokens() {
  std::vector<std::string> tokens(256);
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    const int cp = printable ? b : 256 + extra++;
    std::string u;
    if (cp < 0x80) {
      u.push_back(static_cast<char>(cp));
    } else {
      u.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      u.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    tokens[static_cast<size_t>(b)] = u;
  }
  return tokens;
}

// The same model as a GGUF file the way llama.cpp's converter writes it: llama names, Q/K rows
// permuted within each head (GGUF row 2i = HF row i, 2i+1 = HF row i + hd/2), so muninn runs it
// with interleaved RoPE. With `byte_tokenizer`, it also carries a byte-level BPE vocabulary of
// exactly kVocab tokens without merges (token id = byte), so text commands can run it.
inline void WriteGgufModel(const std::string& path, bool byte_tokenizer = false) {
  GgufWriter w;
  if (byte_tokenizer) {
    static_assert(kVocab == 256);
    w.SetMetadata("tokenizer.ggml.model", MetadataValue::String("gpt2"));
    w.SetMetadata("tokenizer.ggml.tokens", MetadataValue::StringArray(ByteLevelTokens()));
  }
  w.SetMetadata("general.architecture", MetadataValue::String("llama"));
  w.SetMetadata("llama.block_count", MetadataValue::U32(kLayers));
  w.SetMetadata("llama.context_length", MetadataValue::U32(128));
  w.SetMetadata("llama.embedding_length", MetadataValue::U32(kEmbd));
  w.SetMetadata("llama.feed_forward_length", MetadataValue::U32(kFf));
  w.SetMetadata("llama.attention.head_count", MetadataValue::U32(kHeads));
  w.SetMetadata("llama.attention.head_count_kv", MetadataValue::U32(kHeadsKv));
  w.SetMetadata("llama.rope.freq_base", MetadataValue::F32(10000.0f));
  w.SetMetadata("llama.rope.dimension_count", MetadataValue::U32(kHd));
  w.SetMetadata("llama.attention.layer_norm_rms_epsilon", MetadataValue::F32(1e-5f));
  const std::vector<std::pair<std::string, std::string>> names = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"},
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"}};
  const std::vector<Spec> specs = ModelSpecs();
  for (size_t k = 0; k < specs.size(); ++k) {
    const Spec& s = specs[k];
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    std::vector<float> v = Uniform(k, n, s.scale, s.offset);
    std::string name;
    std::string layer;
    std::string rest = s.name;
    if (rest.rfind("model.layers.", 0) == 0) {
      rest = rest.substr(13);
      layer = rest.substr(0, rest.find('.'));
      rest = rest.substr(rest.find('.') + 1);
    }
    for (const auto& [hf, gguf] : names) {
      if (rest == hf) name = (layer.empty() ? "" : "blk." + layer + ".") + gguf;
    }
    MUNINN_CHECK(!name.empty()) << s.name;
    const bool q = rest == "self_attn.q_proj.weight", kk = rest == "self_attn.k_proj.weight";
    if (q || kk) {
      const int heads = q ? kHeads : kHeadsKv;
      std::vector<float> p(v.size());
      for (int h = 0; h < heads; ++h) {
        for (int i = 0; i < kHd / 2; ++i) {
          for (int c = 0; c < kEmbd; ++c) {
            p[static_cast<size_t>(((h * kHd) + 2 * i) * kEmbd + c)] =
                v[static_cast<size_t>(((h * kHd) + i) * kEmbd + c)];
            p[static_cast<size_t>(((h * kHd) + 2 * i + 1) * kEmbd + c)] =
                v[static_cast<size_t>(((h * kHd) + i + kHd / 2) * kEmbd + c)];
          }
        }
      }
      v = p;
    }
    Shape shape = s.shape.size() == 1 ? Shape{s.shape[0]} : Shape{s.shape[0], s.shape[1]};
    auto t = Tensor::FromVector(shape, v);
    MUNINN_CHECK(t.ok()) << t.status();
    const Status st = w.AddTensor(name, *t);
    MUNINN_CHECK(st.ok()) << st;
  }
  const Status st = w.WriteFile(path);
  MUNINN_CHECK(st.ok()) << st;
}

inline LoraConfig AdapterConfig() {
  LoraConfig c;
  c.rank = kRank;
  c.alpha = kAlpha;
  c.dropout = 0.0f;
  c.targets = {LoraTarget::kQ,    LoraTarget::kK,  LoraTarget::kV,   LoraTarget::kO,
               LoraTarget::kGate, LoraTarget::kUp, LoraTarget::kDown};
  c.first_layer = kFirstLayer;
  c.train_norms = true;
  return c;
}

// The goldens' LoRA values: tensor k of LoraParams::tensors() from stream 1000 + k, A with scale
// 1/√n_in, B with 0.1; the norm weights stay the model's.
inline void SetAdapterValues(LoraParams* p) {
  for (size_t k = 0; k < p->tensors().size(); ++k) {
    const LoraTensor& t = p->tensors()[k];
    double scale = 0.0;
    if (t.kind == LoraTensor::Kind::kLoraA) scale = 1.0 / std::sqrt(static_cast<double>(t.cols));
    if (t.kind == LoraTensor::Kind::kLoraB) scale = 0.1;
    if (scale == 0.0) continue;
    const std::vector<float> v = Uniform(1000 + k, t.size(), scale);
    std::copy(v.begin(), v.end(), p->values().begin() + t.offset);
  }
}

// Block b: ids [24] and labels [24] from stream 2000 + b.
inline void Block(int b, std::vector<int32_t>* ids, std::vector<int32_t>* labels) {
  std::vector<int32_t> seq(kBlock + 1);
  for (int i = 0; i <= kBlock; ++i) {
    seq[static_cast<size_t>(i)] = static_cast<int32_t>(
        Raw(2000 + static_cast<uint64_t>(b), static_cast<uint64_t>(i)) % kVocab);
  }
  ids->assign(seq.begin(), seq.end() - 1);
  labels->assign(seq.begin() + 1, seq.end());
  for (int t = 2; t < kBlock; t += 5) (*labels)[static_cast<size_t>(t)] = kIgnoreLabel;
}

}  // namespace muninn::model::tiny_lora
