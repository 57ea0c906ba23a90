// A tiny random llama model, a byte-level tokenizer and a keyword embedder for the retriever and
// tools tests: everything a LongContextSession needs, with no files.
#pragma once

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "muninn/core/cpu_backend.h"
#include "muninn/memory/memory_bank.h"
#include "muninn/model/model.h"
#include "muninn/model/tokenizer_factory.h"
#include "muninn/retriever/embedder.h"

namespace muninn::testing {

inline constexpr int kVocab = 256 + 1;  // 256 byte tokens + <|endoftext|>
inline constexpr int kEmbd = 32, kLayers = 4, kHeads = 4, kHeadsKv = 2, kHd = 8, kFf = 64;

// GPT-2's byte → printable-unicode map, as UTF-8 strings.
inline std::vector<std::string> ByteTokens() {
  std::vector<std::string> out(256);
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const int cp = printable ? b : 256 + n++;
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    out[static_cast<size_t>(b)] = s;
  }
  return out;
}

inline std::unique_ptr<model::Tokenizer> ByteTokenizer() {
  model::VocabSpec spec;
  spec.model = "gpt2";
  spec.pre = "none";
  spec.tokens = ByteTokens();
  spec.tokens.push_back("<|endoftext|>");
  spec.token_types.assign(256, static_cast<int32_t>(model::TokenType::kNormal));
  spec.token_types.push_back(static_cast<int32_t>(model::TokenType::kControl));
  spec.eos_id = 256;
  spec.add_space_prefix = false;
  return std::move(*model::CreateTokenizer(spec));
}

inline Tensor RandomTensor(std::mt19937_64& rng, const Shape& shape, float scale, float offset = 0) {
  Tensor t = *Tensor::Empty(DType::kF32, shape);
  float* p = t.data_as<float>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    p[i] = offset + scale * static_cast<float>(2.0 * static_cast<double>(rng() >> 11) * 0x1.0p-53 - 1.0);
  }
  return t;
}

// `split`: partial offload (the bottom split.host_layers layers on split.host).
inline std::unique_ptr<model::Model> TinyModel(Backend* backend, uint64_t seed = 7,
                                               const model::LayerSplit& split = {}) {
  std::mt19937_64 rng(seed);
  model::ModelConfig c;
  c.n_vocab = kVocab;
  c.n_embd = kEmbd;
  c.n_layer = kLayers;
  c.n_head = kHeads;
  c.n_head_kv = kHeadsKv;
  c.head_dim = kHd;
  c.n_ff = kFf;
  c.n_ctx_train = 4096;
  c.rope.layout = RopeLayout::kHalves;
  model::ModelWeights w;
  w.tok_embd = RandomTensor(rng, {kVocab, kEmbd}, 1.0f);
  w.output_norm = RandomTensor(rng, {kEmbd}, 0.1f, 1.0f);
  w.output = RandomTensor(rng, {kVocab, kEmbd}, 0.3f);
  for (int l = 0; l < kLayers; ++l) {
    model::LayerWeights L;
    L.attn_norm = RandomTensor(rng, {kEmbd}, 0.1f, 1.0f);
    L.wq = RandomTensor(rng, {kHeads * kHd, kEmbd}, 0.6f);
    L.wk = RandomTensor(rng, {kHeadsKv * kHd, kEmbd}, 0.6f);
    L.wv = RandomTensor(rng, {kHeadsKv * kHd, kEmbd}, 0.3f);
    L.wo = RandomTensor(rng, {kEmbd, kHeads * kHd}, 0.3f);
    L.ffn_norm = RandomTensor(rng, {kEmbd}, 0.1f, 1.0f);
    L.w_gate = RandomTensor(rng, {kFf, kEmbd}, 0.3f);
    L.w_up = RandomTensor(rng, {kFf, kEmbd}, 0.3f);
    L.w_down = RandomTensor(rng, {kEmbd, kFf}, 0.2f);
    w.layers.push_back(std::move(L));
  }
  auto m =
      model::Model::Create(backend, c, std::move(w), model::ModelLayout::Plain(kLayers), split);
  MUNINN_CHECK(m.ok()) << m.status();
  return std::move(m).value();
}

// 4-d embeddings that count the letters 'a', 'b', 'c', 'd' in the text (then L2-normalised), so
// tests decide which chunk a query retrieves.
class KeywordEmbedder final : public retriever::Embedder {
 public:
  std::string name() const override { return "keywords"; }
  int64_t dim() const override { return 4; }
  StatusOr<std::vector<float>> Embed(std::span<const retriever::EmbedRequest> requests) override {
    ++calls;
    std::vector<float> out;
    for (const auto& r : requests) {
      float v[4] = {0, 0, 0, 0};
      for (char ch : r.text) {
        if (ch >= 'a' && ch <= 'd') v[ch - 'a'] += 1.0f;
      }
      out.insert(out.end(), v, v + 4);
    }
    retriever::L2NormalizeRows(out, 4);
    return out;
  }
  int calls = 0;
};

inline std::unique_ptr<memory::MemoryBank> InMemoryBank(int64_t dim) {
  memory::MemoryBankOptions o;
  o.in_memory = true;
  o.dim = dim;
  o.n_head_kv = kHeadsKv;
  o.head_dim = kHd;
  o.kv_dtype = DType::kF16;
  o.index_factory = "Flat";
  return std::move(*memory::MemoryBank::Open(o));
}

}  // namespace muninn::testing
