// BertEncoder::Load: a Hugging Face BERT folder (hyperparameters and tensor names from
// model_hparams.h), plus the sentence-transformers files that say how
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
#include "muninn/model/model_hparams.h"
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

// The architecture from ckpt's hparams loader (model_hparams.h): it checks model_type "bert",
// absolute positions and the "gelu" (erf) activation, and finds the optional "bert." prefix.
StatusOr<BertConfig> ToBertConfig(const ModelHParams& hp, const std::string& path) {
  if (hp.arch != ModelArch::kBert) {
    return UnimplementedError(path + ": architecture '" + std::string(ModelArchName(hp.arch)) +
                              "' is not a BERT encoder");
  }
  for (int64_t v : {hp.n_vocab, hp.n_embd, hp.n_layer, hp.n_head, hp.n_ff, hp.n_ctx_train,
                    hp.n_token_types}) {
    if (v > INT32_MAX) return InvalidArgumentError(path + ": a BERT size is out of range");
  }
  BertConfig c;
  c.n_vocab = static_cast<int32_t>(hp.n_vocab);
  c.n_embd = static_cast<int32_t>(hp.n_embd);
  c.n_layer = static_cast<int32_t>(hp.n_layer);
  c.n_head = static_cast<int32_t>(hp.n_head);
  c.n_ff = static_cast<int32_t>(hp.n_ff);
  c.n_pos = static_cast<int32_t>(hp.n_ctx_train);
  c.n_token_type = static_cast<int32_t>(hp.n_token_types);
  c.norm_eps = hp.norm_eps;
  c.gelu = GeluMode::kErf;
  RETURN_IF_ERROR(c.Validate());
  return c;
}

StatusOr<BertWeights> ReadWeights(const Checkpoint& ckpt, const ModelHParams& hp) {
  using R = WeightRole;
  auto get = [&](R role, int64_t layer = -1) { return GetWeight(ckpt, hp, role, layer); };
  BertWeights w;
  ASSIGN_OR_RETURN(w.word_embd, get(R::kTokenEmbd));
  ASSIGN_OR_RETURN(w.pos_embd, get(R::kPosEmbd));
  ASSIGN_OR_RETURN(w.type_embd, get(R::kTokenTypes));
  ASSIGN_OR_RETURN(w.emb_ln_w, get(R::kEmbdNorm));
  ASSIGN_OR_RETURN(w.emb_ln_b, get(R::kEmbdNormBias));
  w.layers.resize(static_cast<size_t>(hp.n_layer));
  for (int64_t i = 0; i < hp.n_layer; ++i) {
    BertLayerWeights& l = w.layers[static_cast<size_t>(i)];
    ASSIGN_OR_RETURN(l.wq, get(R::kAttnQ, i));
    ASSIGN_OR_RETURN(l.bq, get(R::kAttnQBias, i));
    ASSIGN_OR_RETURN(l.wk, get(R::kAttnK, i));
    ASSIGN_OR_RETURN(l.bk, get(R::kAttnKBias, i));
    ASSIGN_OR_RETURN(l.wv, get(R::kAttnV, i));
    ASSIGN_OR_RETURN(l.bv, get(R::kAttnVBias, i));
    ASSIGN_OR_RETURN(l.wo, get(R::kAttnOut, i));
    ASSIGN_OR_RETURN(l.bo, get(R::kAttnOutBias, i));
    ASSIGN_OR_RETURN(l.attn_ln_w, get(R::kAttnOutNorm, i));
    ASSIGN_OR_RETURN(l.attn_ln_b, get(R::kAttnOutNormBias, i));
    ASSIGN_OR_RETURN(l.w_up, get(R::kFfnUp, i));
    ASSIGN_OR_RETURN(l.b_up, get(R::kFfnUpBias, i));
    ASSIGN_OR_RETURN(l.w_down, get(R::kFfnDown, i));
    ASSIGN_OR_RETURN(l.b_down, get(R::kFfnDownBias, i));
    ASSIGN_OR_RETURN(l.ffn_ln_w, get(R::kLayerOutNorm, i));
    ASSIGN_OR_RETURN(l.ffn_ln_b, get(R::kLayerOutNormBias, i));
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
  ASSIGN_OR_RETURN(ModelHParams hp, ReadHParams(*ckpt));
  ASSIGN_OR_RETURN(BertConfig config, ToBertConfig(hp, dir));
  RETURN_IF_ERROR(ReadSentenceTransformers(dir, &config));
  // Tensors share ownership of the mapped files, so the checkpoint object may go.
  ASSIGN_OR_RETURN(BertWeights weights, ReadWeights(*ckpt, hp));
  auto tokenizer = LoadHfTokenizer(dir);
  if (!tokenizer.ok()) return tokenizer.status().WithContext(dir + ": BERT tokenizer");
  return Create(options, config, std::move(weights), std::move(tokenizer).value());
}

}  // namespace muninn::model
