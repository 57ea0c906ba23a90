// BertEncoder::Load: a Hugging Face BERT folder, plus the sentence-transformers files that say how
// to cut, pool and normalise (sentence_bert_config.json, modules.json, <pooling>/config.json).
#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "muninn/core/mapped_file.h"
#include "muninn/model/bert_encoder.h"
#include "muninn/model/checkpoint.h"
#include "muninn/model/tokenizer_factory.h"

namespace muninn::model {

namespace {

using Json = nlohmann::json;

constexpr uint64_t kMaxConfigBytes = 1u << 20;  // these files are a few hundred bytes

bool IsFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Parses a small JSON file without exceptions escaping; depth is bounded by the size cap.
StatusOr<Json> ReadJson(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  if (file->size() > kMaxConfigBytes) {
    return InvalidArgumentError(path + ": " + std::to_string(file->size()) +
                                " bytes is too large for a sentence-transformers config file");
  }
  const char* begin = reinterpret_cast<const char*>(file->data());
  Json j = Json::parse(begin, begin + file->size(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgumentError(path + ": invalid JSON");
  return j;
}

// A module path from modules.json must stay inside the model folder.
bool IsSafeRelativePath(const std::string& p) {
  if (p.empty() || p[0] == '/' || p.find('\\') != std::string::npos ||
      p.find('\0') != std::string::npos) {
    return false;
  }
  size_t start = 0;
  while (start <= p.size()) {
    const size_t end = std::min(p.find('/', start), p.size());
    if (p.compare(start, end - start, "..") == 0) return false;
    start = end + 1;
  }
  return true;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

StatusOr<int32_t> GetInt32(const Checkpoint& ckpt, std::string_view key) {
  ASSIGN_OR_RETURN(int64_t v, ckpt.GetInt(key));
  if (v < INT32_MIN || v > INT32_MAX) {
    return InvalidArgumentError(ckpt.path() + ": config key '" + std::string(key) + "' = " +
                                std::to_string(v) + " is out of range");
  }
  return static_cast<int32_t>(v);
}

// Pooling module config: exactly one supported mode must be on.
Status ReadPooling(const std::string& path, BertConfig* config) {
  ASSIGN_OR_RETURN(Json j, ReadJson(path));
  if (!j.is_object()) return InvalidArgumentError(path + ": expected a JSON object");
  int modes = 0;
  for (const auto& [key, value] : j.items()) {
    if (key.rfind("pooling_mode_", 0) != 0) continue;
    if (!value.is_boolean()) {
      return InvalidArgumentError(path + ": '" + key + "' must be true or false");
    }
    if (!value.get<bool>()) continue;
    ++modes;
    if (key == "pooling_mode_mean_tokens") {
      config->pooling = BertPooling::kMean;
    } else if (key == "pooling_mode_cls_token") {
      config->pooling = BertPooling::kCls;
    } else {
      return UnimplementedError(path + ": '" + key +
                                "' pooling is not supported (mean or CLS pooling only)");
    }
  }
  if (modes != 1) {
    return UnimplementedError(path + ": " + std::to_string(modes) +
                              " pooling modes are on; muninn supports exactly one (mean or CLS)");
  }
  return Status::Ok();
}

// sentence-transformers' module list: Transformer, then Pooling, then optionally Normalize.
Status ReadSentenceTransformers(const std::string& dir, BertConfig* config) {
  const std::string sbert = dir + "/sentence_bert_config.json";
  if (IsFile(sbert)) {
    ASSIGN_OR_RETURN(Json j, ReadJson(sbert));
    if (!j.is_object()) return InvalidArgumentError(sbert + ": expected a JSON object");
    if (j.contains("max_seq_length")) {
      const Json& m = j["max_seq_length"];
      if (!m.is_number_integer() || m.get<int64_t>() < 1) {
        return InvalidArgumentError(sbert + ": max_seq_length must be a positive integer");
      }
      // Never past the position table: sentence-transformers would fail there.
      config->max_tokens =
          static_cast<int32_t>(std::min<int64_t>(m.get<int64_t>(), config->n_pos));
    }
  }
  const std::string modules = dir + "/modules.json";
  if (!IsFile(modules)) return Status::Ok();  // plain BERT folder: mean + normalize defaults
  ASSIGN_OR_RETURN(Json list, ReadJson(modules));
  if (!list.is_array()) return InvalidArgumentError(modules + ": expected a JSON array");
  config->normalize = false;
  bool pooled = false;
  for (const Json& m : list) {
    if (!m.is_object() || !m.contains("type") || !m["type"].is_string()) {
      return InvalidArgumentError(modules + ": every module needs a string 'type'");
    }
    const std::string type = m["type"].get<std::string>();
    if (EndsWith(type, ".Transformer")) continue;
    if (EndsWith(type, ".Normalize")) {
      config->normalize = true;
    } else if (EndsWith(type, ".Pooling")) {
      const std::string sub =
          m.contains("path") && m["path"].is_string() ? m["path"].get<std::string>() : "";
      if (!IsSafeRelativePath(sub)) {
        return InvalidArgumentError(modules + ": pooling module path '" + sub +
                                    "' must be a relative path inside the model folder");
      }
      RETURN_IF_ERROR(ReadPooling(dir + "/" + sub + "/config.json", config));
      pooled = true;
    } else {
      return UnimplementedError(modules + ": module type '" + type +
                                "' is not supported (Transformer, Pooling, Normalize only)");
    }
  }
  if (!pooled) {
    return UnimplementedError(modules + ": no Pooling module; muninn needs pooled embeddings");
  }
  return Status::Ok();
}

StatusOr<BertConfig> ReadConfig(const Checkpoint& ckpt) {
  const std::string arch = ckpt.architecture();
  if (arch != "bert") {
    return UnimplementedError(ckpt.path() + ": model_type '" + arch +
                              "' is not a BERT encoder (expected 'bert')");
  }
  BertConfig c;
  ASSIGN_OR_RETURN(c.n_vocab, GetInt32(ckpt, "vocab_size"));
  ASSIGN_OR_RETURN(c.n_embd, GetInt32(ckpt, "hidden_size"));
  ASSIGN_OR_RETURN(c.n_layer, GetInt32(ckpt, "num_hidden_layers"));
  ASSIGN_OR_RETURN(c.n_head, GetInt32(ckpt, "num_attention_heads"));
  ASSIGN_OR_RETURN(c.n_ff, GetInt32(ckpt, "intermediate_size"));
  ASSIGN_OR_RETURN(c.n_pos, GetInt32(ckpt, "max_position_embeddings"));
  ASSIGN_OR_RETURN(int64_t n_type, ckpt.GetIntOr("type_vocab_size", 2));
  if (n_type < 1 || n_type > INT32_MAX) {
    return InvalidArgumentError(ckpt.path() + ": type_vocab_size " + std::to_string(n_type) +
                                " must be >= 1");
  }
  c.n_token_type = static_cast<int32_t>(n_type);
  ASSIGN_OR_RETURN(double eps, ckpt.GetFloatOr("layer_norm_eps", 1e-12));
  c.norm_eps = static_cast<float>(eps);
  ASSIGN_OR_RETURN(std::string act, ckpt.GetStringOr("hidden_act", "gelu"));
  if (act == "gelu") {
    c.gelu = GeluMode::kErf;
  } else if (act == "gelu_new" || act == "gelu_pytorch_tanh") {
    c.gelu = GeluMode::kTanh;
  } else {
    return UnimplementedError(ckpt.path() + ": hidden_act '" + act +
                              "' is not supported (gelu, gelu_new, gelu_pytorch_tanh)");
  }
  ASSIGN_OR_RETURN(std::string pos_type,
                   ckpt.GetStringOr("position_embedding_type", "absolute"));
  if (pos_type != "absolute") {
    return UnimplementedError(ckpt.path() + ": position_embedding_type '" + pos_type +
                              "' is not supported (absolute only)");
  }
  RETURN_IF_ERROR(c.Validate());
  return c;
}

StatusOr<BertWeights> ReadWeights(const Checkpoint& ckpt, const BertConfig& c) {
  // BertModel checkpoints name tensors "embeddings...."; BertFor* heads prefix them with "bert.".
  const std::string prefix =
      ckpt.FindTensor("embeddings.word_embeddings.weight") == nullptr &&
              ckpt.FindTensor("bert.embeddings.word_embeddings.weight") != nullptr
          ? "bert."
          : "";
  auto get = [&](const std::string& name, const Shape& shape) {
    return ckpt.GetTensor(prefix + name, shape);
  };
  const int64_t d = c.n_embd;
  const int64_t ff = c.n_ff;
  BertWeights w;
  ASSIGN_OR_RETURN(w.word_embd, get("embeddings.word_embeddings.weight", Shape{c.n_vocab, d}));
  ASSIGN_OR_RETURN(w.pos_embd, get("embeddings.position_embeddings.weight", Shape{c.n_pos, d}));
  ASSIGN_OR_RETURN(w.type_embd,
                   get("embeddings.token_type_embeddings.weight", Shape{c.n_token_type, d}));
  ASSIGN_OR_RETURN(w.emb_ln_w, get("embeddings.LayerNorm.weight", Shape{d}));
  ASSIGN_OR_RETURN(w.emb_ln_b, get("embeddings.LayerNorm.bias", Shape{d}));
  w.layers.resize(static_cast<size_t>(c.n_layer));
  for (int32_t i = 0; i < c.n_layer; ++i) {
    BertLayerWeights& l = w.layers[static_cast<size_t>(i)];
    const std::string p = "encoder.layer." + std::to_string(i) + ".";
    ASSIGN_OR_RETURN(l.wq, get(p + "attention.self.query.weight", Shape{d, d}));
    ASSIGN_OR_RETURN(l.bq, get(p + "attention.self.query.bias", Shape{d}));
    ASSIGN_OR_RETURN(l.wk, get(p + "attention.self.key.weight", Shape{d, d}));
    ASSIGN_OR_RETURN(l.bk, get(p + "attention.self.key.bias", Shape{d}));
    ASSIGN_OR_RETURN(l.wv, get(p + "attention.self.value.weight", Shape{d, d}));
    ASSIGN_OR_RETURN(l.bv, get(p + "attention.self.value.bias", Shape{d}));
    ASSIGN_OR_RETURN(l.wo, get(p + "attention.output.dense.weight", Shape{d, d}));
    ASSIGN_OR_RETURN(l.bo, get(p + "attention.output.dense.bias", Shape{d}));
    ASSIGN_OR_RETURN(l.attn_ln_w, get(p + "attention.output.LayerNorm.weight", Shape{d}));
    ASSIGN_OR_RETURN(l.attn_ln_b, get(p + "attention.output.LayerNorm.bias", Shape{d}));
    ASSIGN_OR_RETURN(l.w_up, get(p + "intermediate.dense.weight", Shape{ff, d}));
    ASSIGN_OR_RETURN(l.b_up, get(p + "intermediate.dense.bias", Shape{ff}));
    ASSIGN_OR_RETURN(l.w_down, get(p + "output.dense.weight", Shape{d, ff}));
    ASSIGN_OR_RETURN(l.b_down, get(p + "output.dense.bias", Shape{d}));
    ASSIGN_OR_RETURN(l.ffn_ln_w, get(p + "output.LayerNorm.weight", Shape{d}));
    ASSIGN_OR_RETURN(l.ffn_ln_b, get(p + "output.LayerNorm.bias", Shape{d}));
  }
  return w;
}

}  // namespace

StatusOr<std::unique_ptr<BertEncoder>> BertEncoder::Load(const std::string& dir,
                                                         const BertEncoderOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(dir));
  if (ckpt->format() != CheckpointFormat::kHuggingFace) {
    return UnimplementedError(dir + ": BERT encoders load from Hugging Face folders only");
  }
  ASSIGN_OR_RETURN(BertConfig config, ReadConfig(*ckpt));
  RETURN_IF_ERROR(ReadSentenceTransformers(dir, &config));
  // Tensors share ownership of the mapped files, so the checkpoint object may go.
  ASSIGN_OR_RETURN(BertWeights weights, ReadWeights(*ckpt, config));
  auto tokenizer = LoadHfTokenizer(dir);
  if (!tokenizer.ok()) return tokenizer.status().WithContext(dir + ": BERT tokenizer");
  return Create(options, config, std::move(weights), std::move(tokenizer).value());
}

}  // namespace muninn::model
