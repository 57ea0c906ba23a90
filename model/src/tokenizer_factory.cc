#include "muninn/model/tokenizer_factory.h"

#include <filesystem>
#include <string>

#include "bpe_tokenizer.h"
#include "muninn/model/gguf_file.h"
#include "pretokenizer.h"
#include "spm_tokenizer.h"
#include "wordpiece_tokenizer.h"

namespace muninn::model {

void AddKnownEogTokens(VocabSpec* spec) {
  static constexpr std::string_view kEogTexts[] = {
      "<|im_end|>",    "<|eot_id|>",    "<|end_turn|>", "<|end_text|>", "<|end_of_text|>",
      "<|endoftext|>", "<end_of_turn>", "<|eom_id|>",   "</s>"};
  for (size_t i = 0; i < spec->tokens.size(); ++i) {
    const bool is_control = i < spec->token_types.size() &&
                            spec->token_types[i] == static_cast<int32_t>(TokenType::kControl);
    // Only control tokens qualify when types are known: a normal token spelled "</s>" is text.
    if (!spec->token_types.empty() && !is_control) continue;
    for (std::string_view t : kEogTexts) {
      if (spec->tokens[i] == t) spec->extra_eog_ids.push_back(static_cast<TokenId>(i));
    }
  }
}

StatusOr<std::unique_ptr<Tokenizer>> CreateTokenizer(const VocabSpec& spec) {
  if (spec.model == "gpt2") {
    ASSIGN_OR_RETURN(auto flavor, internal::PreTokenizerFromGgufName(spec.pre));
    return internal::BpeTokenizer::Create(spec, flavor);
  }
  if (spec.model == "llama") return internal::SpmTokenizer::Create(spec);
  if (spec.model == "bert") return internal::WordPieceTokenizer::Create(spec);
  return UnimplementedError("tokenizer model '" + spec.model +
                            "' is not supported (known: gpt2, llama, bert)");
}

namespace {

StatusOr<const MetadataValue*> Require(const GgufFile& gguf, std::string_view key) {
  const MetadataValue* v = gguf.FindMetadata(key);
  if (v == nullptr) {
    return InvalidArgumentError(gguf.name() + " has no " + std::string(key) +
                                "; it carries no usable tokenizer");
  }
  return v;
}

Status ReadOptionalId(const GgufFile& gguf, std::string_view key, TokenId* id) {
  const MetadataValue* v = gguf.FindMetadata(key);
  if (v == nullptr) return Status::Ok();
  ASSIGN_OR_RETURN(int64_t value, v->AsInt());
  // Some converters write -1 (or huge values) for "none"; CreateTokenizer rejects the rest.
  if (value < 0) return Status::Ok();
  if (value > INT32_MAX) {
    return InvalidArgumentError(std::string(key) + " = " + std::to_string(value) +
                                " is not a valid token id");
  }
  *id = static_cast<TokenId>(value);
  return Status::Ok();
}

Status ReadOptionalBool(const GgufFile& gguf, std::string_view key, std::optional<bool>* out) {
  const MetadataValue* v = gguf.FindMetadata(key);
  if (v == nullptr) return Status::Ok();
  ASSIGN_OR_RETURN(bool b, v->AsBool());
  *out = b;
  return Status::Ok();
}

Status ReadVocabSpec(const GgufFile& gguf, VocabSpec* spec) {
  ASSIGN_OR_RETURN(const MetadataValue* model, Require(gguf, "tokenizer.ggml.model"));
  ASSIGN_OR_RETURN(std::string_view model_name, model->AsString());
  spec->model = std::string(model_name);
  if (const MetadataValue* pre = gguf.FindMetadata("tokenizer.ggml.pre")) {
    ASSIGN_OR_RETURN(std::string_view p, pre->AsString());
    spec->pre = std::string(p);
  }
  ASSIGN_OR_RETURN(const MetadataValue* tokens, Require(gguf, "tokenizer.ggml.tokens"));
  ASSIGN_OR_RETURN(auto token_span, tokens->AsStringArray());
  spec->tokens.assign(token_span.begin(), token_span.end());
  if (const MetadataValue* scores = gguf.FindMetadata("tokenizer.ggml.scores")) {
    ASSIGN_OR_RETURN(spec->scores, scores->AsFloatArray());
  }
  if (const MetadataValue* types = gguf.FindMetadata("tokenizer.ggml.token_type")) {
    ASSIGN_OR_RETURN(std::vector<int64_t> t, types->AsIntArray());
    spec->token_types.reserve(t.size());
    for (int64_t x : t) {
      spec->token_types.push_back(x < 0 || x > 6 ? -1 : static_cast<int32_t>(x));
    }
  }
  if (const MetadataValue* merges = gguf.FindMetadata("tokenizer.ggml.merges")) {
    ASSIGN_OR_RETURN(auto merge_span, merges->AsStringArray());
    spec->merges.assign(merge_span.begin(), merge_span.end());
  }
  RETURN_IF_ERROR(ReadOptionalId(gguf, "tokenizer.ggml.bos_token_id", &spec->bos_id));
  RETURN_IF_ERROR(ReadOptionalId(gguf, "tokenizer.ggml.eos_token_id", &spec->eos_id));
  RETURN_IF_ERROR(ReadOptionalId(gguf, "tokenizer.ggml.unknown_token_id", &spec->unk_id));
  RETURN_IF_ERROR(ReadOptionalId(gguf, "tokenizer.ggml.padding_token_id", &spec->pad_id));
  RETURN_IF_ERROR(ReadOptionalId(gguf, "tokenizer.ggml.seperator_token_id", &spec->sep_id));
  RETURN_IF_ERROR(ReadOptionalId(gguf, "tokenizer.ggml.cls_token_id", &spec->cls_id));
  TokenId eot = kNoToken;
  RETURN_IF_ERROR(ReadOptionalId(gguf, "tokenizer.ggml.eot_token_id", &eot));
  if (eot != kNoToken) spec->extra_eog_ids.push_back(eot);
  RETURN_IF_ERROR(ReadOptionalBool(gguf, "tokenizer.ggml.add_bos_token", &spec->add_bos));
  RETURN_IF_ERROR(ReadOptionalBool(gguf, "tokenizer.ggml.add_eos_token", &spec->add_eos));
  RETURN_IF_ERROR(
      ReadOptionalBool(gguf, "tokenizer.ggml.add_space_prefix", &spec->add_space_prefix));
  if (spec->model == "gpt2") {
    // Byte-level vocabularies never get a space prefix from GGUF metadata (llama.cpp ignores it).
    spec->add_space_prefix = false;
    spec->ignore_merges = spec->pre == "llama-bpe" || spec->pre == "llama3";
  }
  AddKnownEogTokens(spec);
  return Status::Ok();
}

}  // namespace

StatusOr<VocabSpec> VocabSpecFromGguf(const GgufFile& gguf) {
  VocabSpec spec;
  Status st = ReadVocabSpec(gguf, &spec);
  if (!st.ok()) return st.WithContext(gguf.name() + ": tokenizer metadata");
  return spec;
}

StatusOr<std::unique_ptr<Tokenizer>> CreateTokenizerFromGguf(const GgufFile& gguf) {
  ASSIGN_OR_RETURN(VocabSpec spec, VocabSpecFromGguf(gguf));
  auto t = CreateTokenizer(spec);
  if (!t.ok()) return t.status().WithContext(gguf.name());
  return t;
}

std::string GgufChatTemplate(const GgufFile& gguf) {
  const MetadataValue* v = gguf.FindMetadata("tokenizer.chat_template");
  if (v == nullptr) return {};
  auto s = v->AsString();
  return s.ok() ? std::string(*s) : std::string();
}

StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) return LoadHfTokenizer(path);
  if (!fs::exists(p, ec)) {
    return NotFoundError("tokenizer source '" + path +
                         "' does not exist; give a .gguf file, an "
                         "HF folder, a tokenizer.json or a tokenizer.model");
  }
  const std::string ext = p.extension().string();
  if (ext == ".gguf") {
    ASSIGN_OR_RETURN(auto gguf, GgufFile::Open(path));
    return CreateTokenizerFromGguf(*gguf);
  }
  if (ext == ".json") return LoadHfTokenizer(path);
  if (ext == ".model") return LoadSentencePieceModel(path);
  return InvalidArgumentError("cannot tell what kind of tokenizer '" + path +
                              "' is; expected .gguf, .json, .model or a folder");
}

}  // namespace muninn::model
