// Hugging Face tokenizer files -> VocabSpec -> Tokenizer. This is the one adapter that calls
// nlohmann::json in the tokenizer code; its exceptions (type errors on hostile files) stop here.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "muninn/model/tokenizer_factory.h"
#include "pretokenizer.h"

namespace muninn::model {

namespace {

using nlohmann::json;

// Ids beyond this are treated as corrupt rather than allocated for (the largest real
// vocabularies have ~260k tokens).
constexpr int64_t kMaxVocab = 1 << 21;
constexpr uintmax_t kMaxTokenizerFileBytes = 1ull << 30;

StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) return NotFoundError("cannot read '" + path + "': " + ec.message());
  if (size > kMaxTokenizerFileBytes) {
    return InvalidArgumentError("'" + path + "' is too large for a tokenizer file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return IoError("cannot open '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A token given as "text" or {"content": "text", ...}.
std::string TokenString(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) {
    return j["content"].get<std::string>();
  }
  return {};
}

// Finds the first object with "type" == `type` in a (possibly Sequence-nested) component.
const json* FindComponent(const json& j, std::string_view type) {
  if (!j.is_object()) return nullptr;
  if (j.contains("type") && j["type"].is_string() && j["type"].get<std::string>() == type) {
    return &j;
  }
  for (const char* list_key : {"pretokenizers", "processors", "normalizers", "decoders"}) {
    if (!j.contains(list_key) || !j[list_key].is_array()) continue;
    for (const json& child : j[list_key]) {
      if (const json* found = FindComponent(child, type)) return found;
    }
  }
  return nullptr;
}

Status SetId(VocabSpec* spec, int64_t id, std::string text, TokenType type) {
  if (id < 0 || id >= kMaxVocab) {
    return InvalidArgumentError("token id " + std::to_string(id) + " for '" + text.substr(0, 64) +
                                "' is out of range");
  }
  const auto i = static_cast<size_t>(id);
  if (i >= spec->tokens.size()) {
    spec->tokens.resize(i + 1);
    spec->token_types.resize(i + 1, static_cast<int32_t>(TokenType::kUnused));
  }
  spec->tokens[i] = std::move(text);
  spec->token_types[i] = static_cast<int32_t>(type);
  return Status::Ok();
}

// The byte-level pre-tokenizer flavour, as a GGUF "pre" name, from the pre_tokenizer component.
StatusOr<std::string> ByteLevelFlavor(const json& pre, bool* add_prefix_space) {
  const json* byte_level = FindComponent(pre, "ByteLevel");
  if (byte_level != nullptr && byte_level->contains("add_prefix_space")) {
    *add_prefix_space = (*byte_level)["add_prefix_space"].get<bool>();
  }
  if (const json* split = FindComponent(pre, "Split")) {
    // Every const operator[] below has its key checked first: on a missing key it is undefined
    // behaviour in nlohmann::json (it dereferences the object's end()), not an exception.
    if (!split->contains("pattern")) {
      return InvalidArgumentError("Split pre-tokenizer without a pattern");
    }
    const json& pattern = (*split)["pattern"];
    if (!pattern.is_object() || !pattern.contains("Regex")) {
      return UnimplementedError("Split pre-tokenizer without a Regex pattern is not supported");
    }
    const std::string regex = pattern["Regex"].get<std::string>();
    ASSIGN_OR_RETURN(internal::PreTokenizerFlavor flavor, internal::PreTokenizerFromRegex(regex));
    return std::string(internal::PreTokenizerName(flavor));
  }
  if (const json* digits = FindComponent(pre, "Digits")) {
    if (digits->value("individual_digits", false)) return std::string("smollm");
    return UnimplementedError("Digits pre-tokenizer without individual_digits is not supported");
  }
  if (byte_level != nullptr && !byte_level->value("use_regex", true)) return std::string("none");
  return std::string("gpt2");
}

Status ParseBpe(const json& root, const json& model, VocabSpec* spec) {
  const json& pre = root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json();
  const json& dec = root.contains("decoder") ? root["decoder"] : json();
  const bool byte_level =
      FindComponent(pre, "ByteLevel") != nullptr || FindComponent(dec, "ByteLevel") != nullptr;
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty()) {
      return UnimplementedError(std::string("BPE with ") + key + " is not supported");
    }
  }
  // Checked with contains() first: const operator[] on a missing key reads past the object's
  // end (heap-use-after-free found by tests/fuzz/tokenizer_json_fuzz.cc).
  if (!model.contains("merges") || !model["merges"].is_array()) {
    return InvalidArgumentError("BPE model has no merges array");
  }
  const json& merges = model["merges"];
  std::vector<std::string> merge_strings;
  merge_strings.reserve(merges.size());
  for (const json& m : merges) {
    if (m.is_string()) {
      merge_strings.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2) {
      merge_strings.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    } else {
      return InvalidArgumentError("BPE merge entries must be \"a b\" strings or [a, b] pairs");
    }
  }
  if (byte_level) {
    spec->model = "gpt2";
    bool add_prefix_space = false;
    ASSIGN_OR_RETURN(spec->pre, ByteLevelFlavor(pre, &add_prefix_space));
    spec->add_space_prefix = add_prefix_space;
    spec->ignore_merges = model.value("ignore_merges", false);
    spec->merges = std::move(merge_strings);
    return Status::Ok();
  }
  // SentencePiece-style BPE (▁ spaces, byte fallback): merge priority becomes a score, so the
  // score-ordered merging of the SentencePiece tokenizer reproduces the rank order.
  spec->model = "llama";
  spec->scores.assign(spec->tokens.size(), 0.0f);
  std::map<std::string, TokenId, std::less<>> ids;
  for (size_t i = 0; i < spec->tokens.size(); ++i) {
    ids.emplace(spec->tokens[i], static_cast<TokenId>(i));
  }
  for (size_t rank = 0; rank < merge_strings.size(); ++rank) {
    std::string joined = merge_strings[rank];
    const size_t sp = joined.find(' ', 1);
    if (sp == std::string::npos) continue;
    joined.erase(sp, 1);
    auto it = ids.find(joined);
    if (it != ids.end() && spec->scores[static_cast<size_t>(it->second)] == 0.0f) {
      spec->scores[static_cast<size_t>(it->second)] = -static_cast<float>(rank + 1);
    }
  }
  // A Prepend("▁") normalizer or Metaspace pre-tokenizer is what "add_space_prefix" means here.
  const json& norm = root.contains("normalizer") ? root["normalizer"] : json();
  spec->add_space_prefix =
      FindComponent(norm, "Prepend") != nullptr || FindComponent(pre, "Metaspace") != nullptr;
  for (size_t i = 0; i < spec->tokens.size(); ++i) {
    const std::string& t = spec->tokens[i];
    if (t.size() == 6 && t.starts_with("<0x") && t.back() == '>' &&
        spec->token_types[i] == static_cast<int32_t>(TokenType::kNormal)) {
      spec->token_types[i] = static_cast<int32_t>(TokenType::kByte);
    }
  }
  return Status::Ok();
}

Status ParseWordPiece(const json& root, const json& model, VocabSpec* spec) {
  spec->model = "bert";
  spec->continuing_subword_prefix = model.value("continuing_subword_prefix", std::string("##"));
  if (model.contains("max_input_chars_per_word")) {
    // value<int32_t>() would static_cast a float like 1e300 to int: undefined behaviour.
    const json& max_chars = model["max_input_chars_per_word"];
    if (!max_chars.is_number_integer() || max_chars.get<int64_t>() < 1 ||
        max_chars.get<int64_t>() > INT32_MAX) {
      return InvalidArgumentError("WordPiece max_input_chars_per_word must be a positive integer");
    }
    spec->max_input_chars_per_word = static_cast<int32_t>(max_chars.get<int64_t>());
  }
  if (root.contains("normalizer") && root["normalizer"].is_object()) {
    const json* bert = FindComponent(root["normalizer"], "BertNormalizer");
    if (bert == nullptr) {
      return UnimplementedError("WordPiece tokenizers are supported with a BertNormalizer only");
    }
    spec->lowercase = bert->value("lowercase", true);
    spec->clean_text = bert->value("clean_text", true);
    spec->handle_chinese_chars = bert->value("handle_chinese_chars", true);
    if (bert->contains("strip_accents") && (*bert)["strip_accents"].is_boolean()) {
      spec->strip_accents = (*bert)["strip_accents"].get<bool>();
    }
  }
  return Status::Ok();
}

// BOS/EOS (and [CLS]/[SEP]) from a TemplateProcessing post-processor's single-sequence template.
void ParsePostProcessor(const json& root, VocabSpec* spec) {
  if (!root.contains("post_processor")) return;
  const json* tp = FindComponent(root["post_processor"], "TemplateProcessing");
  if (tp == nullptr || !tp->contains("single") || !(*tp)["single"].is_array()) return;
  const json& single = (*tp)["single"];
  const json& specials = tp->contains("special_tokens") ? (*tp)["special_tokens"] : json();
  auto special_id = [&](const json& item) -> TokenId {
    // const json::operator[] on a missing key or a non-object is undefined behaviour: every
    // level is checked with contains()/is_object() first (found by ASan on mutated input).
    if (!item.is_object() || !item.contains("SpecialToken")) return kNoToken;
    const json& st = item["SpecialToken"];
    if (!st.is_object() || !st.contains("id") || !st["id"].is_string()) return kNoToken;
    const std::string name = st["id"].get<std::string>();
    if (!specials.is_object() || !specials.contains(name)) return kNoToken;
    const json& entry = specials[name];
    if (!entry.is_object() || !entry.contains("ids")) return kNoToken;
    const json& ids = entry["ids"];
    if (!ids.is_array() || ids.size() != 1 || !ids[0].is_number_integer()) return kNoToken;
    const int64_t id = ids[0].get<int64_t>();
    return id >= 0 && id < kMaxVocab ? static_cast<TokenId>(id) : kNoToken;
  };
  bool seen_sequence = false;
  TokenId before = kNoToken;
  TokenId after = kNoToken;
  for (const json& item : single) {
    if (item.is_object() && item.contains("Sequence")) {
      seen_sequence = true;
    } else if (TokenId id = special_id(item); id != kNoToken) {
      (seen_sequence ? after : before) = id;
    }
  }
  if (spec->model == "bert") {
    spec->cls_id = before;
    spec->sep_id = after;
    spec->add_bos = before != kNoToken || after != kNoToken;
    return;
  }
  spec->add_bos = before != kNoToken;
  spec->add_eos = after != kNoToken;
  if (before != kNoToken) spec->bos_id = before;
  if (after != kNoToken) spec->eos_id = after;
}

Status ApplyConfig(std::string_view config_text, VocabSpec* spec) {
  if (config_text.empty()) return Status::Ok();
  const json cfg = json::parse(config_text, nullptr, /*allow_exceptions=*/false);
  if (cfg.is_discarded() || !cfg.is_object()) {
    return InvalidArgumentError("tokenizer_config.json is not a JSON object");
  }
  auto find = [&](const std::string& text) -> TokenId {
    for (size_t i = 0; i < spec->tokens.size(); ++i) {
      if (spec->tokens[i] == text) return static_cast<TokenId>(i);
    }
    return kNoToken;
  };
  for (const auto& [key, field] : {std::pair<const char*, TokenId*>{"bos_token", &spec->bos_id},
                                   {"eos_token", &spec->eos_id},
                                   {"unk_token", &spec->unk_id},
                                   {"pad_token", &spec->pad_id}}) {
    if (!cfg.contains(key)) continue;
    const std::string text = TokenString(cfg[key]);
    if (text.empty()) continue;
    const TokenId id = find(text);
    if (id != kNoToken) *field = id;
  }
  if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) {
    spec->add_bos = cfg["add_bos_token"].get<bool>();
  }
  if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean()) {
    spec->add_eos = cfg["add_eos_token"].get<bool>();
  }
  return Status::Ok();
}

Status ParseTokenizerJson(std::string_view text, std::string_view config_text, VocabSpec* spec) {
  const json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return InvalidArgumentError("tokenizer.json is not valid JSON");
  }
  if (!root.contains("model") || !root["model"].is_object()) {
    return InvalidArgumentError("tokenizer.json has no \"model\" object");
  }
  const json& model = root["model"];
  const std::string type = model.value("type", std::string());
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    if (type == "Unigram") {
      return UnimplementedError(
          "Unigram tokenizer.json models are not supported; use the "
          "checkpoint's tokenizer.model or GGUF vocabulary");
    }
    return InvalidArgumentError("tokenizer.json model has no vocab object");
  }
  for (const auto& [piece, id] : model["vocab"].items()) {
    if (!id.is_number_integer()) return InvalidArgumentError("vocab ids must be integers");
    RETURN_IF_ERROR(SetId(spec, id.get<int64_t>(), piece, TokenType::kNormal));
  }
  if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
    for (const json& added : root["added_tokens"]) {
      if (!added.is_object() || !added.contains("id") || !added["id"].is_number_integer()) {
        return InvalidArgumentError("added_tokens entries need an integer id");
      }
      const bool special = added.value("special", false);
      RETURN_IF_ERROR(SetId(spec, added["id"].get<int64_t>(), TokenString(added),
                            special ? TokenType::kControl : TokenType::kUserDefined));
    }
  }
  for (size_t i = 0; i < spec->tokens.size(); ++i) {
    if (spec->token_types[i] == static_cast<int32_t>(TokenType::kUnused) &&
        spec->tokens[i].empty()) {
      // A hole in the id space: give it a name no text can produce by accident.
      spec->tokens[i] = "<muninn:unused:" + std::to_string(i) + ">";
    }
  }
  if (model.contains("unk_token")) {
    const std::string unk = TokenString(model["unk_token"]);
    for (size_t i = 0; i < spec->tokens.size() && !unk.empty(); ++i) {
      if (spec->tokens[i] == unk) {
        spec->unk_id = static_cast<TokenId>(i);
        break;
      }
    }
  }
  if (type == "BPE") {
    RETURN_IF_ERROR(ParseBpe(root, model, spec));
  } else if (type == "WordPiece") {
    RETURN_IF_ERROR(ParseWordPiece(root, model, spec));
  } else {
    return UnimplementedError("tokenizer.json model type '" + type +
                              "' is not supported (known: BPE, WordPiece)");
  }
  ParsePostProcessor(root, spec);
  RETURN_IF_ERROR(ApplyConfig(config_text, spec));
  AddKnownEogTokens(spec);
  return Status::Ok();
}

// vocab.txt (one WordPiece token per line) for BERT folders without tokenizer.json.
Status ParseVocabTxt(std::string_view text, VocabSpec* spec) {
  spec->model = "bert";
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    spec->tokens.emplace_back(line);
    pos = end + 1;
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> ParseHfTokenizerJson(std::string_view tokenizer_json,
                                                          std::string_view config_json) {
  VocabSpec spec;
  Status st;
  try {
    st = ParseTokenizerJson(tokenizer_json, config_json, &spec);
  } catch (const std::exception& e) {
    st = InvalidArgumentError(std::string("tokenizer.json has an unexpected structure: ") +
                              e.what());
  }
  RETURN_IF_ERROR(st);
  return CreateTokenizer(spec);
}

StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path dir = path;
  fs::path json_path;
  if (fs::is_directory(dir, ec)) {
    json_path = dir / "tokenizer.json";
  } else {
    json_path = dir;
    dir = dir.parent_path();
  }
  std::string config;
  if (fs::exists(dir / "tokenizer_config.json", ec)) {
    ASSIGN_OR_RETURN(config, ReadTextFile((dir / "tokenizer_config.json").string()));
  }
  if (fs::exists(json_path, ec)) {
    ASSIGN_OR_RETURN(std::string text, ReadTextFile(json_path.string()));
    auto t = ParseHfTokenizerJson(text, config);
    if (!t.ok()) return t.status().WithContext(json_path.string());
    return t;
  }
  if (fs::exists(dir / "tokenizer.model", ec)) {
    return LoadSentencePieceModel((dir / "tokenizer.model").string());
  }
  if (fs::exists(dir / "vocab.txt", ec)) {
    ASSIGN_OR_RETURN(std::string text, ReadTextFile((dir / "vocab.txt").string()));
    VocabSpec spec;
    RETURN_IF_ERROR(ParseVocabTxt(text, &spec));
    return CreateTokenizer(spec);
  }
  return NotFoundError("'" + path + "' has no tokenizer.json, tokenizer.model or vocab.txt");
}

std::string HfChatTemplate(const std::string& dir) {
  auto text = ReadTextFile((std::filesystem::path(dir) / "tokenizer_config.json").string());
  if (!text.ok()) return {};
  const json cfg = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (cfg.is_discarded() || !cfg.is_object() || !cfg.contains("chat_template")) return {};
  const json& t = cfg["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (!t.is_array()) return {};
  for (const json& entry : t) {
    if (!entry.is_object() || !entry.contains("name") || !entry.contains("template")) continue;
    const json& name = entry["name"];
    const json& tmpl = entry["template"];
    if (name.is_string() && name.get<std::string>() == "default" && tmpl.is_string()) {
      return tmpl.get<std::string>();
    }
  }
  return {};
}

}  // namespace muninn::model
