#include "tokenizer_fuzz_common.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bpe_tokenizer.h"
#include "muninn/model/gguf_writer.h"
#include "unicode.h"

namespace muninn::fuzz {

using model::TokenId;
using model::TokenType;
using model::VocabSpec;

namespace {

constexpr int32_t kNormal = static_cast<int32_t>(TokenType::kNormal);
constexpr int32_t kUnknown = static_cast<int32_t>(TokenType::kUnknown);
constexpr int32_t kControl = static_cast<int32_t>(TokenType::kControl);
constexpr int32_t kUserDefined = static_cast<int32_t>(TokenType::kUserDefined);
constexpr int32_t kByte = static_cast<int32_t>(TokenType::kByte);

std::string ByteToken(int b) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
  return buf;
}

// tokenizer.json "added_tokens" entries for the control / user-defined tokens of `spec`.
nlohmann::json AddedTokens(const VocabSpec& spec) {
  nlohmann::json added = nlohmann::json::array();
  for (size_t i = 0; i < spec.tokens.size(); ++i) {
    const int32_t type = spec.token_types[i];
    if (type != kControl && type != kUserDefined) continue;
    added.push_back({{"id", i},
                     {"content", spec.tokens[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", type == kControl}});
  }
  return added;
}

nlohmann::json VocabObject(const VocabSpec& spec, bool with_added) {
  nlohmann::json vocab = nlohmann::json::object();
  for (size_t i = 0; i < spec.tokens.size(); ++i) {
    const int32_t type = spec.token_types.empty() ? kNormal : spec.token_types[i];
    if (!with_added && (type == kControl || type == kUserDefined)) continue;
    vocab[spec.tokens[i]] = i;
  }
  return vocab;
}

// Merges as tokenizer.json writes them today: [left, right] pairs.
nlohmann::json MergePairs(const std::vector<std::string>& merges) {
  nlohmann::json out = nlohmann::json::array();
  for (const std::string& m : merges) {
    const size_t sp = m.find(' ', 1);
    out.push_back({m.substr(0, sp), m.substr(sp + 1)});
  }
  return out;
}

// Appends one protobuf field. Wire types: 0 varint, 2 length-delimited, 5 fixed32.
void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}
void PutTag(std::string* out, uint32_t field, uint32_t wire) { PutVarint(out, field << 3 | wire); }
void PutBytes(std::string* out, uint32_t field, std::string_view bytes) {
  PutTag(out, field, 2);
  PutVarint(out, bytes.size());
  out->append(bytes);
}
void PutInt(std::string* out, uint32_t field, int64_t v) {
  PutTag(out, field, 0);
  PutVarint(out, static_cast<uint64_t>(v));
}
void PutFloat(std::string* out, uint32_t field, float v) {
  PutTag(out, field, 5);
  char raw[4];
  std::memcpy(raw, &v, 4);
  out->append(raw, 4);
}

}  // namespace

void FuzzCheck(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "tokenizer fuzz contract broken: %s\n", what);
  std::abort();
}

VocabSpec TinyByteLevelSpec() {
  VocabSpec s;
  s.model = "gpt2";
  s.pre = "smollm";
  const auto table = model::internal::ByteToCodePointTable();
  for (int b = 0; b < 256; ++b) s.tokens.push_back(model::unicode::EncodeUtf8(table[b]));
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"},   {"l", "l"},   {"he", "ll"},   {"hell", "o"}, {"Ġ", "w"},  {"Ġw", "o"},
      {"r", "l"},   {"Ġwo", "rl"}, {"Ġworl", "d"}, {"Ġ", "t"},   {"Ġt", "he"}, {"Ċ", "Ċ"},
      {"Ã", "©"},   {"Ġ", "Ġ"},   {"ĠĠ", "ĠĠ"},   {"i", "n"},   {"Ġ", "in"}};
  for (const auto& [a, b] : merges) {
    s.merges.push_back(a + " " + b);
    s.tokens.push_back(a + b);
  }
  s.token_types.assign(s.tokens.size(), kNormal);
  for (const char* special : {"<|im_start|>", "<|im_end|>", "<|endoftext|>"}) {
    s.tokens.push_back(special);
    s.token_types.push_back(kControl);
  }
  s.tokens.push_back("<tool>");
  s.token_types.push_back(kUserDefined);
  s.bos_id = static_cast<TokenId>(s.tokens.size() - 4);
  s.eos_id = static_cast<TokenId>(s.tokens.size() - 3);
  model::AddKnownEogTokens(&s);
  return s;
}

VocabSpec TinySpmSpec() {
  VocabSpec s;
  s.model = "llama";
  s.tokens = {"<unk>", "<s>", "</s>"};
  s.token_types = {kUnknown, kControl, kControl};
  s.scores = {0, 0, 0};
  for (int b = 0; b < 256; ++b) {
    s.tokens.push_back(ByteToken(b));
    s.token_types.push_back(kByte);
    s.scores.push_back(0);
  }
  const std::vector<std::pair<std::string, float>> pieces = {
      {"▁", -100}, {"h", -100},   {"e", -100},  {"l", -100},     {"o", -100},   {"w", -100},
      {"r", -100}, {"d", -100},   {"▁h", -2},   {"el", -10},     {"ll", -1},    {"▁he", -3},
      {"llo", -4}, {"▁hello", -5}, {"▁w", -2},   {"or", -3},      {"▁wor", -4},  {"ld", -5},
      {"▁world", -6}, {"▁▁", -7}, {"é", -50},   {"東", -60},      {"京", -60},   {"東京", -8}};
  for (const auto& [p, score] : pieces) {
    s.tokens.push_back(p);
    s.token_types.push_back(kNormal);
    s.scores.push_back(score);
  }
  s.tokens.push_back("<|user|>");
  s.token_types.push_back(kUserDefined);
  s.scores.push_back(0);
  s.unk_id = 0;
  s.bos_id = 1;
  s.eos_id = 2;
  model::AddKnownEogTokens(&s);
  return s;
}

VocabSpec TinyWordPieceSpec() {
  VocabSpec s;
  s.model = "bert";
  s.tokens = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", ",",     "world", "!",
              "naive", "中",    "文",    "un",    "##aff",  "##able", "a",    "##b",   "the",
              "##s",   "cafe",  ".",     "'",     "1",      "##2",    "##3",  "-",     "東"};
  s.unk_id = 1;
  s.pad_id = 0;
  s.cls_id = 2;
  s.sep_id = 3;
  return s;
}

std::string ByteLevelTokenizerJson() {
  const VocabSpec s = TinyByteLevelSpec();
  nlohmann::json j;
  j["version"] = "1.0";
  j["added_tokens"] = AddedTokens(s);
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Digits"}, {"individual_digits", true}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
         {"use_regex", true}}}}};
  j["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}};
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}};
  j["model"] = {{"type", "BPE"},           {"dropout", nullptr},
                {"unk_token", nullptr},    {"continuing_subword_prefix", nullptr},
                {"fuse_unk", false},       {"byte_fallback", false},
                {"ignore_merges", false},  {"vocab", VocabObject(s, /*with_added=*/true)},
                {"merges", MergePairs(s.merges)}};
  return j.dump();
}

std::string Llama3TokenizerJson() {
  const VocabSpec s = TinyByteLevelSpec();
  nlohmann::json j;
  j["added_tokens"] = AddedTokens(s);
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern",
          {{"Regex", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
                     "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<|im_start|>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"special_tokens",
       {{"<|im_start|>", {{"id", "<|im_start|>"}, {"ids", {s.bos_id}}, {"tokens", {"x"}}}}}}};
  j["decoder"] = {{"type", "ByteLevel"}};
  // Merges in the older "a b" string form.
  j["model"] = {{"type", "BPE"},
                {"ignore_merges", true},
                {"vocab", VocabObject(s, /*with_added=*/false)},
                {"merges", s.merges}};
  return j.dump();
}

std::string SpmBpeTokenizerJson() {
  const VocabSpec s = TinySpmSpec();
  nlohmann::json j;
  j["added_tokens"] = AddedTokens(s);
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", "▁"}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}};
  j["pre_tokenizer"] = nullptr;
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  // Merges that build the scored pieces, best first.
  const std::vector<std::string> merges = {"l l", "▁ h", "▁ w", "▁h e", "o r", "ll o", "▁w or",
                                           "▁he llo", "l d", "▁wor ld", "▁ ▁", "東 京", "e l"};
  j["model"] = {{"type", "BPE"},
                {"unk_token", "<unk>"},
                {"byte_fallback", true},
                {"fuse_unk", true},
                {"vocab", VocabObject(s, /*with_added=*/true)},
                {"merges", merges}};
  return j.dump();
}

std::string WordPieceTokenizerJson() {
  const VocabSpec s = TinyWordPieceSpec();
  nlohmann::json j;
  nlohmann::json added = nlohmann::json::array();
  for (int id : {0, 1, 2, 3, 4}) {
    added.push_back({{"id", id}, {"content", s.tokens[static_cast<size_t>(id)]}, {"special", true}});
  }
  j["added_tokens"] = added;
  j["normalizer"] = {{"type", "BertNormalizer"},
                     {"clean_text", true},
                     {"handle_chinese_chars", true},
                     {"strip_accents", nullptr},
                     {"lowercase", true}};
  j["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "[CLS]"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
        {{"SpecialToken", {{"id", "[SEP]"}, {"type_id", 0}}}}}},
      {"special_tokens",
       {{"[CLS]", {{"id", "[CLS]"}, {"ids", {2}}, {"tokens", {"[CLS]"}}}},
        {"[SEP]", {{"id", "[SEP]"}, {"ids", {3}}, {"tokens", {"[SEP]"}}}}}}};
  j["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}};
  j["model"] = {{"type", "WordPiece"},
                {"unk_token", "[UNK]"},
                {"continuing_subword_prefix", "##"},
                {"max_input_chars_per_word", 100},
                {"vocab", VocabObject(s, /*with_added=*/true)}};
  return j.dump();
}

std::string TokenizerConfigJson() {
  return R"({"add_bos_token": false, "add_eos_token": true, "bos_token": "<|im_start|>",)"
         R"( "eos_token": {"content": "<|im_end|>"}, "pad_token": "<|endoftext|>",)"
         R"( "unk_token": null, "chat_template": "{{ x }}"})";
}

std::string WordPieceVocabTxt() {
  std::string out;
  for (const std::string& t : TinyWordPieceSpec().tokens) out += t + "\n";
  return out;
}

std::vector<uint8_t> GgufWithVocab(const VocabSpec& spec, const std::string& chat_template) {
  using model::MetadataType;
  using model::MetadataValue;
  model::GgufWriter w;
  w.SetMetadata("general.architecture", MetadataValue::String("llama"));
  w.SetMetadata("tokenizer.ggml.model", MetadataValue::String(spec.model));
  if (spec.model == "gpt2") w.SetMetadata("tokenizer.ggml.pre", MetadataValue::String(spec.pre));
  w.SetMetadata("tokenizer.ggml.tokens", MetadataValue::StringArray(spec.tokens));
  if (!spec.scores.empty()) {
    const std::vector<double> scores(spec.scores.begin(), spec.scores.end());
    w.SetMetadata("tokenizer.ggml.scores", MetadataValue::FloatArray(MetadataType::kF32, scores));
  }
  if (!spec.token_types.empty()) {
    const std::vector<int64_t> types(spec.token_types.begin(), spec.token_types.end());
    w.SetMetadata("tokenizer.ggml.token_type",
                  MetadataValue::IntArray(MetadataType::kI32, types));
  }
  if (!spec.merges.empty()) {
    w.SetMetadata("tokenizer.ggml.merges", MetadataValue::StringArray(spec.merges));
  }
  auto put_id = [&](const char* key, TokenId id) {
    if (id != model::kNoToken) w.SetMetadata(key, MetadataValue::U32(static_cast<uint32_t>(id)));
  };
  put_id("tokenizer.ggml.bos_token_id", spec.bos_id);
  put_id("tokenizer.ggml.eos_token_id", spec.eos_id);
  put_id("tokenizer.ggml.unknown_token_id", spec.unk_id);
  put_id("tokenizer.ggml.padding_token_id", spec.pad_id);
  put_id("tokenizer.ggml.seperator_token_id", spec.sep_id);
  put_id("tokenizer.ggml.cls_token_id", spec.cls_id);
  w.SetMetadata("tokenizer.ggml.add_bos_token", MetadataValue::Bool(spec.model != "gpt2"));
  w.SetMetadata("tokenizer.ggml.add_eos_token", MetadataValue::Bool(false));
  if (spec.model == "llama") {
    w.SetMetadata("tokenizer.ggml.add_space_prefix", MetadataValue::Bool(true));
  }
  if (!chat_template.empty()) {
    w.SetMetadata("tokenizer.chat_template", MetadataValue::String(chat_template));
  }
  auto bytes = w.Serialize();
  FuzzCheck(bytes.ok(), "GgufWriter::Serialize of a seed");
  return std::move(bytes).value();
}

std::string TinySentencePieceModelProto() {
  // ModelProto: pieces = 1, trainer_spec = 2, normalizer_spec = 3.
  // SentencePiece: piece = 1, score = 2, type = 3 (1 normal, 2 unknown, 3 control, 4 user, 6 byte).
  std::string model;
  auto piece = [&](std::string_view text, float score, int type) {
    std::string p;
    PutBytes(&p, 1, text);
    PutFloat(&p, 2, score);
    PutInt(&p, 3, type);
    PutBytes(&model, 1, p);
  };
  piece("<unk>", 0, 2);
  piece("<s>", 0, 3);
  piece("</s>", 0, 3);
  for (int b = 0; b < 256; ++b) piece(ByteToken(b), 0, 6);
  int rank = 0;
  for (const char* p : {"▁h", "ll", "▁he", "llo", "▁hello", "▁w", "or", "▁wor", "ld", "▁world",
                        "▁", "h", "e", "l", "o", "w", "r", "d", "é", "東", "京", "東京"}) {
    piece(p, static_cast<float>(-(rank++)), 1);
  }
  piece("<tool>", 0, 4);
  // TrainerSpec: model_type = 3 (2 = BPE), vocab_size = 4, byte_fallback = 35.
  std::string trainer;
  PutInt(&trainer, 3, 2);
  PutInt(&trainer, 4, 3 + 256 + 22 + 1);
  PutInt(&trainer, 35, 1);
  PutBytes(&model, 2, trainer);
  // NormalizerSpec: name = 1, add_dummy_prefix = 3, remove_extra_whitespaces = 4,
  // escape_whitespaces = 5.
  std::string norm;
  PutBytes(&norm, 1, "identity");
  PutInt(&norm, 3, 1);
  PutInt(&norm, 4, 0);
  PutInt(&norm, 5, 1);
  PutBytes(&model, 3, norm);
  return model;
}

std::string ChatMlTemplate() {
  return "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
         "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
         "Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
         "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
         "{{ '<|im_start|>assistant\n' }}{% endif %}";
}

std::string Llama3Template() {
  return "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
         "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ "
         "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = "
         "bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt "
         "%}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
}

StatusOr<std::unique_ptr<model::Tokenizer>> LoadSentencePieceModelBytes(std::string_view bytes) {
  const int fd = memfd_create("muninn_fuzz_spm", MFD_CLOEXEC);
  FuzzCheck(fd >= 0, "memfd_create");
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    FuzzCheck(n > 0, "write to memfd");
    done += static_cast<size_t>(n);
  }
  auto t = model::LoadSentencePieceModel("/proc/self/fd/" + std::to_string(fd));
  close(fd);
  return t;
}

std::string StreamDecode(const model::Tokenizer& t, const std::vector<TokenId>& ids) {
  model::IncrementalDetokenizer d(t);
  std::string out;
  for (TokenId id : ids) {
    const std::string part = d.Push(id);
    FuzzCheck(model::unicode::IsValidUtf8(part), "streamed piece is valid UTF-8");
    out += part;
  }
  const std::string tail = d.Flush();
  FuzzCheck(model::unicode::IsValidUtf8(tail), "streamed tail is valid UTF-8");
  return out + tail;
}

std::vector<TokenId> ExerciseTokenizer(const model::Tokenizer& t, std::string_view text,
                                       int32_t max_vocab_walk) {
  const int32_t n_vocab = t.vocab_size();
  FuzzCheck(n_vocab > 0, "a tokenizer that loads has a vocabulary");
  std::vector<TokenId> plain;
  for (int flags = 0; flags < 4; ++flags) {
    const std::vector<TokenId> ids = t.Encode(text, flags & 1, flags & 2);
    for (TokenId id : ids) FuzzCheck(id >= 0 && id < n_vocab, "Encode gives ids in range");
    (void)t.Decode(ids, false);
    (void)t.Decode(ids, true);
    if (flags == 0) plain = ids;
  }
  (void)StreamDecode(t, plain);
  // Ids a generator may produce: every id (bounded), specials and out-of-range ones.
  std::vector<TokenId> walk;
  for (TokenId id = -2; id < std::min(n_vocab, max_vocab_walk) + 2; ++id) {
    walk.push_back(id);
    (void)t.TokenToPiece(id);
    const std::string_view text_of = t.TokenText(id);
    (void)t.GetTokenType(id);
    if (id >= 0 && id < n_vocab && !text_of.empty()) {
      const TokenId back = t.TokenIdOf(text_of);
      FuzzCheck(back == model::kNoToken || (back >= 0 && back < n_vocab),
                "TokenIdOf gives an id in range");
    }
  }
  for (TokenId id : {t.bos_id(), t.eos_id(), t.unk_id(), t.pad_id(), n_vocab - 1, n_vocab,
                     INT32_MAX, INT32_MIN}) {
    walk.push_back(id);
  }
  for (TokenId id : t.eog_ids()) {
    FuzzCheck(id >= 0 && id < n_vocab, "eog ids are in range");
    (void)t.IsEog(id);
  }
  (void)t.Decode(walk, false);
  (void)t.Decode(walk, true);
  (void)StreamDecode(t, walk);
  (void)t.TokenIdOf(text);
  return plain;
}

void WriteSeedsIfAsked(const std::vector<std::pair<std::string, std::string>>& seeds) {
  const char* dir = std::getenv("MUNINN_FUZZ_SEED_DIR");
  if (dir == nullptr || *dir == '\0') return;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  for (const auto& [name, bytes] : seeds) {
    std::ofstream out(std::filesystem::path(dir) / name, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    FuzzCheck(out.good(), "writing a seed file");
  }
}

}  // namespace muninn::fuzz
