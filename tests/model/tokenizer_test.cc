// Tokenizer algorithms on tiny hand-built vocabularies (no files needed).
#include "muninn/model/tokenizer.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "model/src/bpe_tokenizer.h"
#include "model/src/unicode.h"
#include "muninn/model/tokenizer_factory.h"

namespace muninn::model {
namespace {

using Ids = std::vector<TokenId>;

constexpr int32_t kNormal = static_cast<int32_t>(TokenType::kNormal);
constexpr int32_t kControl = static_cast<int32_t>(TokenType::kControl);
constexpr int32_t kUserDefined = static_cast<int32_t>(TokenType::kUserDefined);
constexpr int32_t kByte = static_cast<int32_t>(TokenType::kByte);
constexpr int32_t kUnknown = static_cast<int32_t>(TokenType::kUnknown);

// Byte-level vocabulary: ids 0..255 are the bytes (GPT-2 spelling), then merges, then specials.
VocabSpec TinyBpeSpec() {
  VocabSpec s;
  s.model = "gpt2";
  s.pre = "default";
  const auto table = internal::ByteToCodePointTable();
  for (int b = 0; b < 256; ++b) s.tokens.push_back(unicode::EncodeUtf8(table[b]));
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"},  {"l", "l"}, {"he", "ll"},  {"hell", "o"}, {"Ġ", "w"},
      {"Ġw", "o"}, {"r", "l"}, {"Ġwo", "rl"}, {"Ġworl", "d"}};
  for (const auto& [a, b] : merges) {
    s.merges.push_back(a + " " + b);
    s.tokens.push_back(a + b);  // ids 256..264
  }
  s.tokens.push_back("<|im_start|>");  // 265
  s.tokens.push_back("<|im_end|>");    // 266
  s.tokens.push_back("<tool>");        // 267
  s.tokens.push_back("el");            // 268, merged last
  s.merges.push_back("e l");
  s.token_types.assign(s.tokens.size(), kNormal);
  s.token_types[265] = kControl;
  s.token_types[266] = kControl;
  s.token_types[267] = kUserDefined;
  s.eos_id = 266;
  AddKnownEogTokens(&s);
  return s;
}

std::unique_ptr<Tokenizer> Make(const VocabSpec& spec) {
  auto t = CreateTokenizer(spec);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(t).value() : nullptr;
}

TEST(BpeTokenizerTest, MergesByRank) {
  auto t = Make(TinyBpeSpec());
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->kind(), TokenizerKind::kByteLevelBpe);
  EXPECT_EQ(t->Encode("hello world", false, false), (Ids{259, 264}));
  EXPECT_EQ(t->Encode("hello  world", false, false), (Ids{259, ' ', 264}));
  // "h e" outranks "e l": "hel" is [he, l], while "el" alone merges.
  EXPECT_EQ(t->Encode("hel", false, false), (Ids{256, 'l'}));
  EXPECT_EQ(t->Encode("el", false, false), (Ids{268}));
  EXPECT_EQ(t->Decode(Ids{259, 264}), "hello world");
  EXPECT_EQ(t->TokenToPiece(264), " world");
  EXPECT_EQ(t->TokenText(264), "Ġworld");
  EXPECT_EQ(t->TokenIdOf("Ġworld"), 264);
  EXPECT_EQ(t->TokenIdOf("nope"), kNoToken);
  EXPECT_EQ(t->Decode(Ids{-5, 100000}), "");
}

TEST(BpeTokenizerTest, SpecialTokens) {
  auto t = Make(TinyBpeSpec());
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("<|im_start|>hello<|im_end|>", false, true), (Ids{265, 259, 266}));
  const Ids plain = t->Encode("<|im_start|>hello", false, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 265), 0);
  EXPECT_EQ(t->Decode(plain), "<|im_start|>hello");
  // User-defined tokens are atomic even without parse_special.
  EXPECT_EQ(t->Encode("a<tool>b", false, false), (Ids{'a', 267, 'b'}));
  EXPECT_EQ(t->Decode(Ids{265, 259, 266}, /*skip_special=*/true), "hello");
  EXPECT_EQ(t->Decode(Ids{265, 259, 266}), "<|im_start|>hello<|im_end|>");
  EXPECT_TRUE(t->IsEog(266));
  EXPECT_FALSE(t->IsEog(265));
}

TEST(BpeTokenizerTest, BosEosAndIgnoreMerges) {
  VocabSpec s = TinyBpeSpec();
  s.bos_id = 265;
  s.add_bos = true;
  s.add_eos = true;
  auto t = Make(s);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("el", true, false), (Ids{265, 268, 266}));
  EXPECT_EQ(t->Encode("el", false, false), (Ids{268}));
  // With ignore_merges a word that is in the vocabulary is taken whole even if its merges
  // would not build it ("hel" + "lo" is not a merge path here).
  s.tokens.push_back("hello2");
  s.token_types.push_back(kNormal);
  s.ignore_merges = true;
  s.pre = "none";
  auto t2 = Make(s);
  ASSERT_NE(t2, nullptr);
  EXPECT_EQ(t2->Encode("hello2", false, false), (Ids{269}));
  s.ignore_merges = false;
  auto t3 = Make(s);
  ASSERT_NE(t3, nullptr);
  EXPECT_EQ(t3->Encode("hello2", false, false), (Ids{259, '2'}));
}

TEST(BpeTokenizerTest, RandomBytesRoundTripExactly) {
  auto t = Make(TinyBpeSpec());
  ASSERT_NE(t, nullptr);
  const uint32_t seed = 20261124;
  std::mt19937 rng(seed);
  const std::vector<std::string> atoms = {
      "hello", " world", "<tool>", "é",          "\xF0\x9F\x98\x80",
      "  ",    "\n",     "123",    "<|im_end|>", "\xE4\xB8"};
  for (int iter = 0; iter < 300; ++iter) {
    std::string text;
    const int n = static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      if (rng() % 3 == 0) {
        text += atoms[rng() % atoms.size()];
      } else {
        text.push_back(static_cast<char>(rng() & 0xFF));
      }
    }
    for (bool parse_special : {false, true}) {
      const Ids ids = t->Encode(text, true, parse_special);
      for (TokenId id : ids) ASSERT_TRUE(id >= 0 && id < t->vocab_size());
      ASSERT_EQ(t->Decode(ids), text) << "seed " << seed << " iteration " << iter;
    }
  }
}

TEST(BpeTokenizerTest, LongWhitespaceRunIsFast) {
  auto t = Make(TinyBpeSpec());
  ASSERT_NE(t, nullptr);
  const std::string text(200000, ' ');
  const Ids ids = t->Encode(text, false, false);
  EXPECT_EQ(ids.size(), text.size());  // no merge for spaces in this vocabulary
  EXPECT_EQ(t->Decode(ids), text);
}

// SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, then pieces with merge scores.
VocabSpec TinySpmSpec() {
  VocabSpec s;
  s.model = "llama";
  s.tokens = {"<unk>", "<s>", "</s>"};
  s.token_types = {kUnknown, kControl, kControl};
  s.scores = {0, 0, 0};
  char buf[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    s.tokens.push_back(buf);
    s.token_types.push_back(kByte);
    s.scores.push_back(0);
  }
  const std::vector<std::pair<std::string, float>> pieces = {
      {"▁", -100}, {"h", -100},  {"e", -100}, {"l", -100},    {"o", -100},
      {"w", -100}, {"r", -100},  {"d", -100}, {"▁h", -2},     {"el", -10},
      {"ll", -1},  {"▁he", -3},  {"llo", -4}, {"▁hello", -5}, {"▁w", -2},
      {"or", -3},  {"▁wor", -4}, {"ld", -5},  {"▁world", -6}};
  for (const auto& [p, score] : pieces) {
    s.tokens.push_back(p);
    s.token_types.push_back(kNormal);
    s.scores.push_back(score);
  }
  s.unk_id = 0;
  s.bos_id = 1;
  s.eos_id = 2;
  return s;
}

TEST(SpmTokenizerTest, MergesByScoreWithByteFallback) {
  VocabSpec s = TinySpmSpec();
  auto t = Make(s);
  ASSERT_NE(t, nullptr);
  auto id = [&](std::string_view p) { return t->TokenIdOf(p); };
  EXPECT_EQ(t->Encode("hello world", true, false), (Ids{1, id("▁hello"), id("▁world")}));
  EXPECT_EQ(t->Encode("hé", false, false), (Ids{id("▁h"), 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(t->Decode(t->Encode("hé", true, false), true), "hé");
  EXPECT_EQ(t->Decode(t->Encode("hello world", true, false)), "<s> hello world");
  EXPECT_EQ(t->TokenToPiece(id("▁world")), " world");
  EXPECT_EQ(t->TokenToPiece(3 + 'A'), "A");
  EXPECT_EQ(t->Encode("<s>", false, true), (Ids{1}));
}

TEST(SpmTokenizerTest, RandomTextNeverCrashesAndValidUtf8RoundTrips) {
  auto t = Make(TinySpmSpec());
  ASSERT_NE(t, nullptr);
  const uint32_t seed = 7;
  std::mt19937 rng(seed);
  for (int iter = 0; iter < 300; ++iter) {
    std::string text;
    const int n = static_cast<int>(rng() % 30);
    for (int i = 0; i < n; ++i) text.push_back(static_cast<char>(rng() & 0xFF));
    const Ids ids = t->Encode(text, true, true);
    for (TokenId i : ids) ASSERT_TRUE(i >= 0 && i < t->vocab_size());
    // Byte fallback covers every byte, so even invalid UTF-8 survives.
    ASSERT_EQ(t->Decode(ids, true), text) << "seed " << seed << " iteration " << iter;
  }
}

TEST(SpmTokenizerTest, UnknownWithoutByteTokens) {
  VocabSpec s;
  s.model = "llama";
  s.tokens = {"<unk>", "▁", "a"};
  s.token_types = {kUnknown, kNormal, kNormal};
  s.unk_id = 0;
  s.add_space_prefix = false;
  auto t = Make(s);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("a中a", false, false), (Ids{2, 0, 2}));
}

VocabSpec TinyBertSpec() {
  VocabSpec s;
  s.model = "bert";
  s.tokens = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", ",",      "world",
              "!",     "naive", "中",    "文",    "un",     "##aff", "##able", "a"};
  return s;
}

TEST(WordPieceTokenizerTest, BertNormalisationAndGreedyPieces) {
  auto t = Make(TinyBertSpec());
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->kind(), TokenizerKind::kWordPiece);
  EXPECT_EQ(t->Encode("Hello, WORLD! Naïve 中文 unaffable xyz", true, false),
            (Ids{2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 1, 3}));
  EXPECT_EQ(t->Decode(Ids{2, 5, 6, 7, 8, 9, 12, 13, 14, 3}, true), "hello, world! naive unaffable");
  EXPECT_EQ(t->Encode("[CLS] a", false, true), (Ids{2, 15}));
  // Control characters vanish, odd whitespace separates, invalid bytes are dropped.
  EXPECT_EQ(t->Encode("a\x01\xFF\tA\xE3\x80\x80"
                      "a",
                      false, false),
            (Ids{15, 15, 15}));
  EXPECT_EQ(t->Encode(std::string(101, 'a'), false, false), (Ids{1}));
}

TEST(WordPieceTokenizerTest, RandomBytesNeverCrash) {
  auto t = Make(TinyBertSpec());
  ASSERT_NE(t, nullptr);
  std::mt19937 rng(11);
  for (int iter = 0; iter < 200; ++iter) {
    std::string text;
    for (int i = static_cast<int>(rng() % 40); i > 0; --i) text.push_back(static_cast<char>(rng()));
    for (TokenId id : t->Encode(text, true, true)) ASSERT_TRUE(id >= 0 && id < t->vocab_size());
  }
}

TEST(IncrementalDetokenizerTest, HoldsBackSplitCharacters) {
  auto t = Make(TinyBpeSpec());
  ASSERT_NE(t, nullptr);
  IncrementalDetokenizer d(*t);
  EXPECT_EQ(d.Push(259), "hello");
  EXPECT_EQ(d.Push(0xF0), "");
  EXPECT_EQ(d.Push(0x9F), "");
  EXPECT_EQ(d.Push(0x98), "");
  EXPECT_EQ(d.Push(0x80), "\xF0\x9F\x98\x80");
  EXPECT_EQ(d.Push(266), "");  // control token skipped
  EXPECT_EQ(d.Push(0xFF), "\xEF\xBF\xBD");
  EXPECT_EQ(d.Push(0xC3), "");
  EXPECT_EQ(d.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(d.Push('a'), "a");
}

TEST(IncrementalDetokenizerTest, StreamEqualsDecodeForSentencePiece) {
  auto t = Make(TinySpmSpec());
  ASSERT_NE(t, nullptr);
  const std::string text = "hello wörld 😀 hello";
  const Ids ids = t->Encode(text, true, false);
  IncrementalDetokenizer d(*t);
  std::string streamed;
  for (TokenId id : ids) {
    const std::string part = d.Push(id);
    EXPECT_TRUE(unicode::IsValidUtf8(part));
    streamed += part;
  }
  streamed += d.Flush();
  EXPECT_EQ(streamed, text);
}

TEST(TokenizerFactoryTest, RejectsBadVocabularies) {
  VocabSpec s = TinyBpeSpec();
  s.bos_id = 100000;
  EXPECT_EQ(CreateTokenizer(s).status().code(), StatusCode::kInvalidArgument);
  s = TinyBpeSpec();
  s.merges.push_back("nospace");
  EXPECT_EQ(CreateTokenizer(s).status().code(), StatusCode::kInvalidArgument);
  s = TinyBpeSpec();
  s.token_types.pop_back();
  EXPECT_EQ(CreateTokenizer(s).status().code(), StatusCode::kInvalidArgument);
  s = TinyBpeSpec();
  s.token_types[3] = 42;
  EXPECT_EQ(CreateTokenizer(s).status().code(), StatusCode::kInvalidArgument);
  s = TinyBpeSpec();
  s.model = "rwkv";
  EXPECT_EQ(CreateTokenizer(s).status().code(), StatusCode::kUnimplemented);
  s = TinyBpeSpec();
  s.pre = "mystery";
  EXPECT_EQ(CreateTokenizer(s).status().code(), StatusCode::kUnimplemented);
  s = TinyBpeSpec();
  s.tokens.clear();
  s.token_types.clear();
  EXPECT_EQ(CreateTokenizer(s).status().code(), StatusCode::kInvalidArgument);
  VocabSpec b = TinyBertSpec();
  b.tokens[1] = "[NOPE]";
  EXPECT_EQ(CreateTokenizer(b).status().code(), StatusCode::kInvalidArgument);
}

// Regression (tests/fuzz/vocab_spec_fuzz.cc): an extra end-of-turn id of kNoToken ("none") was
// accepted and then listed in eog_ids() as -1.
TEST(TokenizerFactoryTest, NoTokenExtraEogIdIsIgnored) {
  VocabSpec s = TinyBpeSpec();
  s.extra_eog_ids = {kNoToken, 265, kNoToken};
  auto t = Make(s);
  ASSERT_NE(t, nullptr);
  for (TokenId id : t->eog_ids()) EXPECT_TRUE(id >= 0 && id < t->vocab_size()) << id;
  EXPECT_FALSE(t->IsEog(kNoToken));
  EXPECT_TRUE(t->IsEog(265));
  EXPECT_TRUE(t->IsEog(266));
}

// Regressions (tests/fuzz/tokenizer_json_fuzz.cc): keys that nlohmann's const operator[] was
// asked for without a contains() check (a read past the object's end under ASan), and a float
// where an int is expected (an undefined float-to-int cast).
TEST(TokenizerFactoryTest, TokenizerJsonWithMissingKeysIsAnError) {
  const std::string bpe_no_merges =
      R"({"decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0}}})";
  EXPECT_EQ(ParseHfTokenizerJson(bpe_no_merges).status().code(), StatusCode::kInvalidArgument);
  const std::string split_no_pattern =
      R"({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split"},)"
      R"( {"type": "ByteLevel"}]}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})";
  EXPECT_EQ(ParseHfTokenizerJson(split_no_pattern).status().code(),
            StatusCode::kInvalidArgument);
  for (const char* max_chars : {"1e300", "-5", "0", "99999999999", "\"x\""}) {
    const std::string wordpiece =
        std::string(R"({"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 1},)") +
        R"( "unk_token": "[UNK]", "max_input_chars_per_word": )" + max_chars + "}}";
    EXPECT_EQ(ParseHfTokenizerJson(wordpiece).status().code(), StatusCode::kInvalidArgument)
        << max_chars;
  }
  const std::string wordpiece_ok =
      R"({"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 1}, "unk_token": "[UNK]",)"
      R"( "max_input_chars_per_word": 3}})";
  auto t = ParseHfTokenizerJson(wordpiece_ok);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->Encode("a aaaa", false, false), (Ids{1, 0}));
}

TEST(TokenizerFactoryTest, MutatedTokenizerJsonNeverCrashes) {
  const std::string base =
      R"({"added_tokens": [{"id": 3, "content": "[CLS]", "special": true}],)"
      R"("normalizer": {"type": "BertNormalizer", "lowercase": true},)"
      R"("post_processor": {"type": "TemplateProcessing", "single": [)"
      R"({"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A"}}],)"
      R"("special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [3]}}},)"
      R"("model": {"type": "WordPiece", "unk_token": "[UNK]",)"
      R"("vocab": {"[UNK]": 0, "a": 1, "##b": 2, "[CLS]": 3}}})";
  auto ok = ParseHfTokenizerJson(base);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->Encode("ab", true, false), (Ids{3, 1, 2}));
  const uint32_t seed = 99;
  std::mt19937 rng(seed);
  const std::string alphabet = "{}[]\":,0123456789-eE.tfn \\";
  int parsed = 0;
  for (int iter = 0; iter < 400; ++iter) {
    std::string text = base;
    for (int m = 1 + static_cast<int>(rng() % 3); m > 0; --m) {
      const size_t pos = rng() % text.size();
      text[pos] = rng() % 2 ? alphabet[rng() % alphabet.size()] : static_cast<char>(rng());
    }
    auto t = ParseHfTokenizerJson(text);  // must return, never crash or throw
    if (!t.ok()) continue;
    ++parsed;
    for (TokenId id : (*t)->Encode("a ab [CLS] b", true, true)) {
      ASSERT_TRUE(id >= 0 && id < (*t)->vocab_size()) << "seed " << seed << " iteration " << iter;
    }
  }
  EXPECT_GT(parsed, 0);
}

}  // namespace
}  // namespace muninn::model
