// Tokenizers against ids from independent implementations (HF tokenizers / transformers' GGUF
// converter, Python sentencepiece): tests/data/tokenizer_goldens.json, made by
// tools/reference/make_tokenizer_goldens.py. Cases needing model files under models/ skip when
// those are absent (scripts/setup.sh fetches them).
#include <gtest/gtest.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "model/src/unicode.h"
#include "muninn/model/chat_template.h"
#include "muninn/model/gguf_file.h"
#include "muninn/model/tokenizer.h"
#include "muninn/model/tokenizer_factory.h"

namespace muninn::model {
namespace {

using nlohmann::json;

const std::string kRoot = MUNINN_SOURCE_DIR;
const std::string kSmolLm2 = kRoot + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
const std::string kMiniLm = kRoot + "/models/all-MiniLM-L6-v2";

const json& Goldens() {
  static const json* goldens = [] {
    std::ifstream in(kRoot + "/tests/data/tokenizer_goldens.json");
    std::stringstream ss;
    ss << in.rdbuf();
    return new json(json::parse(ss.str()));
  }();
  return *goldens;
}

const json& Case(const std::string& name) {
  for (const json& c : Goldens()["cases"]) {
    if (c["name"] == name) return c;
  }
  ADD_FAILURE() << "no golden case " << name;
  static const json empty = json::object();
  return empty;
}

// Compares every row; returns the number of mismatches (each one reported).
int CompareRows(const Tokenizer& t, const json& c, bool check_round_trip) {
  int bad = 0;
  const bool add_special = c["add_special"];
  const bool parse_special = c["parse_special"];
  for (const json& row : c["rows"]) {
    const std::string text = row["text"];
    const std::vector<TokenId> want = row["ids"].get<std::vector<TokenId>>();
    const std::vector<TokenId> got = t.Encode(text, add_special, parse_special);
    if (got != want) {
      ++bad;
      ADD_FAILURE() << c["name"] << ": text " << json(text).dump() << "\n  want "
                    << json(want).dump() << "\n  got  " << json(got).dump();
      continue;
    }
    if (check_round_trip) {
      EXPECT_EQ(t.Decode(got), text) << c["name"];
    }
  }
  return bad;
}

std::unique_ptr<GgufFile> OpenSmolLm2() {
  if (!std::filesystem::exists(kSmolLm2)) return nullptr;
  auto g = GgufFile::Open(kSmolLm2);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? std::move(g).value() : nullptr;
}

class SmolLm2GoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SmolLm2GoldenTest, MatchesTransformers) {
  auto gguf = OpenSmolLm2();
  if (gguf == nullptr) GTEST_SKIP() << kSmolLm2 << " is absent (run scripts/setup.sh)";
  auto spec = VocabSpecFromGguf(*gguf);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->pre, "smollm");
  spec->pre = GetParam();
  auto t = CreateTokenizer(*spec);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(CompareRows(**t, Case("smollm2_gguf_" + GetParam()), /*check_round_trip=*/true), 0);
}

INSTANTIATE_TEST_SUITE_P(PreTokenizers, SmolLm2GoldenTest,
                         ::testing::Values("smollm", "gpt2", "llama-bpe", "qwen2"),
                         [](const ::testing::TestParamInfo<std::string>& param_info) {
                           std::string n = param_info.param;
                           for (char& ch : n) {
                             if (ch == '-') ch = '_';
                           }
                           return n;
                         });

TEST(SmolLm2TokenizerTest, MetadataSpecialTokensAndChat) {
  auto gguf = OpenSmolLm2();
  if (gguf == nullptr) GTEST_SKIP() << kSmolLm2 << " is absent (run scripts/setup.sh)";
  auto t = CreateTokenizerFromGguf(*gguf);
  ASSERT_TRUE(t.ok()) << t.status();
  const Tokenizer& tok = **t;
  EXPECT_EQ(tok.vocab_size(), 49152);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_FALSE(tok.add_bos());
  EXPECT_TRUE(tok.IsEog(2));  // <|im_end|>
  EXPECT_TRUE(tok.IsEog(0));  // <|endoftext|>
  EXPECT_EQ(tok.GetTokenType(1), TokenType::kControl);
  auto chat = ChatTemplate::FromJinja(GgufChatTemplate(*gguf));
  ASSERT_TRUE(chat.ok()) << chat.status();
  std::vector<ChatMessage> msgs = {{"user", "Hi"}};
  const std::string prompt = *chat->Render(msgs, true);
  const std::vector<TokenId> ids = tok.Encode(prompt, false, true);
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids.front(), 1);  // <|im_start|>
  EXPECT_EQ(tok.Decode(ids), prompt);
  // Streaming decode of the prompt gives the same text.
  IncrementalDetokenizer d(tok, /*skip_special=*/false);
  std::string streamed;
  for (TokenId id : ids) streamed += d.Push(id);
  EXPECT_EQ(streamed + d.Flush(), prompt);
}

TEST(SmolLm2TokenizerTest, MutatedUtf8RoundTrips) {
  auto gguf = OpenSmolLm2();
  if (gguf == nullptr) GTEST_SKIP() << kSmolLm2 << " is absent (run scripts/setup.sh)";
  auto t = CreateTokenizerFromGguf(*gguf);
  ASSERT_TRUE(t.ok()) << t.status();
  const uint32_t seed = 424242;
  std::mt19937 rng(seed);
  std::vector<std::string> texts;
  for (const json& row : Case("smollm2_gguf_smollm")["rows"]) texts.push_back(row["text"]);
  std::array<bool, 256> spellable{};
  int n_spellable = 0;
  for (int b = 0; b < 256; ++b) {
    const std::vector<TokenId> one =
        (*t)->Encode(std::string(1, static_cast<char>(b)), false, false);
    spellable[static_cast<size_t>(b)] = !one.empty();
    n_spellable += one.empty() ? 0 : 1;
  }
  EXPECT_GT(n_spellable, 200);
  int valid = 0;
  for (int iter = 0; iter < 200; ++iter) {
    std::string text = texts[rng() % texts.size()];
    // Mutations: flip a byte, insert a random byte, cut at a random point.
    for (int m = static_cast<int>(rng() % 4); m > 0 && !text.empty(); --m) {
      const size_t pos = rng() % text.size();
      switch (rng() % 3) {
        case 0:
          text[pos] = static_cast<char>(rng());
          break;
        case 1:
          text.insert(text.begin() + static_cast<std::ptrdiff_t>(pos), static_cast<char>(rng()));
          break;
        default:
          text.resize(pos);
      }
    }
    const std::vector<TokenId> ids = (*t)->Encode(text, true, false);
    for (TokenId id : ids) ASSERT_TRUE(id >= 0 && id < (*t)->vocab_size());
    // SmolLM2 has no tokens for a few bytes (controls such as 0x16, and 0xF2, ...): they are
    // dropped. Everything else must come back byte for byte.
    std::string expected;
    for (char ch : text) {
      if (spellable[static_cast<uint8_t>(ch)]) expected.push_back(ch);
    }
    valid += unicode::IsValidUtf8(text) ? 1 : 0;
    ASSERT_EQ((*t)->Decode(ids), expected) << "seed " << seed << " iteration " << iter;
  }
  EXPECT_GT(valid, 50) << "the mutations should leave many texts valid";
}

TEST(MiniLmTokenizerTest, MatchesHfTokenizers) {
  if (!std::filesystem::exists(kMiniLm + "/tokenizer.json")) {
    GTEST_SKIP() << kMiniLm << " is absent (run scripts/setup.sh)";
  }
  auto t = LoadHfTokenizer(kMiniLm);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->kind(), TokenizerKind::kWordPiece);
  EXPECT_EQ((*t)->vocab_size(), 30522);
  EXPECT_EQ(CompareRows(**t, Case("minilm_wordpiece"), /*check_round_trip=*/false), 0);
  const std::vector<TokenId> ids = (*t)->Encode("Hello, world! unaffable", true, false);
  EXPECT_EQ((*t)->Decode(ids, true), "hello, world! unaffable");
  // The folder's vocab.txt alone gives the same tokenizer.
  auto dir = std::filesystem::temp_directory_path() / "muninn_tok_vocab_txt";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(kMiniLm + "/vocab.txt", dir / "vocab.txt",
                             std::filesystem::copy_options::overwrite_existing);
  auto t2 = LoadHfTokenizer(dir.string());
  ASSERT_TRUE(t2.ok()) << t2.status();
  EXPECT_EQ(CompareRows(**t2, Case("minilm_wordpiece"), false), 0);
  std::filesystem::remove_all(dir);
}

TEST(SentencePieceGoldenTest, LibSentencePieceAdapter) {
  const json& c = Case("tiny_spm");
  auto t = LoadSentencePieceModel(kRoot + "/" + c["model_file"].get<std::string>());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->kind(), TokenizerKind::kSentencePieceModel);
  EXPECT_EQ(CompareRows(**t, c, /*check_round_trip=*/true), 0);
  EXPECT_EQ((*t)->bos_id(), 1);
  EXPECT_EQ((*t)->GetTokenType(1), TokenType::kControl);
  EXPECT_EQ((*t)->Encode("<s>", false, true), (std::vector<TokenId>{1}));
  EXPECT_EQ(LoadSentencePieceModel(kRoot + "/tests/data/tokenizer_goldens.json").status().code(),
            StatusCode::kInvalidArgument);
}

// Regression (tests/fuzz/tokenizer_text_fuzz.cc): Decode handed each run between control tokens
// to libsentencepiece on its own, which dropped the leading space of every run, so Decode and
// the streaming IncrementalDetokenizer disagreed after a <s> or </s> in the ids.
TEST(SentencePieceGoldenTest, DecodeAcrossControlTokensEqualsStream) {
  const json& c = Case("tiny_spm");
  auto t = LoadSentencePieceModel(kRoot + "/" + c["model_file"].get<std::string>());
  ASSERT_TRUE(t.ok()) << t.status();
  for (const char* text : {"the cat<s> sat on</s>  the mat<s>", "<s>a b</s></s> c", " x<s>"}) {
    const std::vector<TokenId> ids = (*t)->Encode(text, /*add_special=*/true, true);
    for (bool skip : {true, false}) {
      IncrementalDetokenizer d(**t, skip);
      std::string streamed;
      for (TokenId id : ids) streamed += d.Push(id);
      streamed += d.Flush();
      EXPECT_EQ((*t)->Decode(ids, skip), streamed) << text << " skip_special=" << skip;
    }
  }
  // The fragment after a control token gets its own dummy-prefix ▁ (as in llama.cpp and HF's
  // legacy SentencePiece tokenizers), which decodes as a space.
  const std::vector<TokenId> ids = (*t)->Encode("the cat<s>sat", false, true);
  EXPECT_EQ((*t)->Decode(ids, /*skip_special=*/true), "the cat sat");
  EXPECT_EQ((*t)->Decode(ids, /*skip_special=*/false), "the cat<s> sat");
}

TEST(SentencePieceGoldenTest, OwnImplementationMatchesSentencePieceBpe) {
  const json& c = Case("tiny_spm");
  const json& v = c["vocab"];
  VocabSpec spec;
  spec.model = "llama";
  spec.tokens = v["tokens"].get<std::vector<std::string>>();
  spec.scores = v["scores"].get<std::vector<float>>();
  spec.token_types = v["token_types"].get<std::vector<int32_t>>();
  spec.bos_id = v["bos_id"];
  spec.eos_id = v["eos_id"];
  spec.unk_id = v["unk_id"];
  auto t = CreateTokenizer(spec);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(CompareRows(**t, c, /*check_round_trip=*/true), 0);
}

TEST(HfTokenizerJsonTest, MalformedFilesAreErrors) {
  for (std::string_view bad :
       {"{", "[]", "{\"model\": 3}", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [7]}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999999}, \"merges\": []}}",
        "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}",
        "{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}}",
        "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}"}) {
    auto t = ParseHfTokenizerJson(bad);
    EXPECT_FALSE(t.ok()) << bad;
  }
}

TEST(HfTokenizerJsonTest, ByteLevelBpeWithListMergesAndSplitRegex) {
  // A vocabulary that only spells "a", "b" and "Ġ"; Llama-3 split regex, list-form merges.
  const std::string json_text =
      R"({"added_tokens": [{"id": 5, "content": "<|eot|>", "special": true}],)"
      R"("pre_tokenizer": {"type": "Sequence", "pretokenizers": [)"
      R"({"type": "Split", "pattern": {"Regex": )"
      R"("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3})"
      R"(| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated"},)"
      R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]},)"
      R"("post_processor": {"type": "TemplateProcessing", "single": [)"
      R"({"SpecialToken": {"id": "<|eot|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],)"
      R"("special_tokens": {"<|eot|>": {"id": "<|eot|>", "ids": [5]}}},)"
      R"("model": {"type": "BPE", "ignore_merges": true,)"
      R"("vocab": {"a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġab": 4},)"
      R"("merges": [["a", "b"], ["Ġ", "ab"]]}})";
  auto t = ParseHfTokenizerJson(json_text);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->Encode("ab ab<|eot|>", true, true), (std::vector<TokenId>{5, 3, 4, 5}));
  EXPECT_TRUE((*t)->add_bos());
  EXPECT_TRUE((*t)->IsEog(5) || (*t)->eos_id() == kNoToken);
}

}  // namespace
}  // namespace muninn::model
