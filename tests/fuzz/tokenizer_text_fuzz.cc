// libFuzzer harness for text through fixed, valid tokenizers of every kind: byte-level BPE (two
// tokenizer.json flavours), SentencePiece from GGUF-style vocabulary data, SentencePiece-style BPE
// from tokenizer.json, WordPiece from tokenizer.json and a tokenizer.model run by
// libsentencepiece. The first input byte picks the tokenizer (and whether the text is first
// rendered as a chat message); the rest is the text, any bytes at all. Also the trainer-made
// tests/data/tiny_spm.model.
//
// Beyond ExerciseTokenizer's checks, the round-trip contract of tokenizer.h:
//  - byte-level BPE: Decode(Encode(x)) == x for every byte string x;
//  - the in-house SentencePiece (byte fallback): the same, except that a U+2581 "▁" already in x
//    comes back as a space (SentencePiece writes spaces as ▁; HF's tokenizers do the same), for
//    texts without user-defined tokens (the fragment after an atomic token gets its own ▁ prefix,
//    as in llama.cpp's and HF's legacy SentencePiece tokenizers, so " " is added there);
//  - streaming: IncrementalDetokenizer's output == Decode's output with invalid UTF-8 replaced
//    (SanitizeUtf8), for every tokenizer but WordPiece (whose Decode also removes the spaces
//    before punctuation, as HF's WordPiece decoder does; nothing streams BERT output).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/model/chat_template.h"
#include "tokenizer_fuzz_common.h"
#include "unicode.h"

namespace {

using namespace muninn;

struct Fixed {
  std::unique_ptr<model::Tokenizer> tokenizer;
  enum RoundTrip { kExact, kSpaceMarkIsSpace, kNone } round_trip;
  bool stream_equals_decode;  // StreamDecode(ids) == SanitizeUtf8(Decode(ids))
};

bool HasAtomicToken(const model::Tokenizer& t, const std::vector<model::TokenId>& ids) {
  for (model::TokenId id : ids) {
    const model::TokenType type = t.GetTokenType(id);
    if (type == model::TokenType::kControl || type == model::TokenType::kUserDefined) return true;
  }
  return false;
}

std::vector<Fixed>* fixed = nullptr;

std::unique_ptr<model::Tokenizer> MustLoad(StatusOr<std::unique_ptr<model::Tokenizer>> t,
                                           const char* what) {
  if (!t.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, t.status().ToString().c_str());
    fuzz::FuzzCheck(false, "a fixed tokenizer loads");
  }
  return std::move(t).value();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // One long seed, so that libFuzzer's length limit starts above the short ones' ~50 bytes.
  std::string long_text(1, '\x03');
  for (int i = 0; i < 24; ++i) {
    long_text += "the café  東京\t\n\n 12345 <tool>\xE2\x96\x81hello\xC3 world!! ";
  }
  fuzz::WriteSeedsIfAsked({
      {"long", long_text},
      {"hello", std::string("\x00hello world", 12)},
      {"chat", std::string("\x16") + "What is 東京? <|im_end|> 123,456 café\n\n  x"},
      {"bytes", std::string("\x02\xF0\x9F\x98\x80\xC3\x28\xE2\x82\xA1\xED\xA0\x80 <s></s>\xFF", 21)},
      {"bert", std::string("\x04") + "Hello, WORLD! Naïve 中文 unaffable [CLS] a\x01\t\xE3\x80\x80"},
      {"spm", std::string("\x05") + " hello  world <tool> é東京 \xE2\x96\x81"},
  });
  fixed = new std::vector<Fixed>();
  fixed->push_back({MustLoad(model::ParseHfTokenizerJson(fuzz::ByteLevelTokenizerJson()),
                             "byte-level tokenizer.json"),
                    Fixed::kExact, true});
  fixed->push_back({MustLoad(model::ParseHfTokenizerJson(fuzz::Llama3TokenizerJson()),
                             "llama3 tokenizer.json"),
                    Fixed::kExact, true});
  fixed->push_back({MustLoad(model::CreateTokenizer(fuzz::TinySpmSpec()), "SentencePiece spec"),
                    Fixed::kSpaceMarkIsSpace, true});
  fixed->push_back({MustLoad(model::ParseHfTokenizerJson(fuzz::SpmBpeTokenizerJson()),
                             "SentencePiece-style BPE tokenizer.json"),
                    Fixed::kSpaceMarkIsSpace, true});
  fixed->push_back({MustLoad(model::ParseHfTokenizerJson(fuzz::WordPieceTokenizerJson()),
                             "WordPiece tokenizer.json"),
                    Fixed::kNone, false});
  fixed->push_back({MustLoad(fuzz::LoadSentencePieceModelBytes(fuzz::TinySentencePieceModelProto()),
                             "tokenizer.model"),
                    Fixed::kNone, true});
  // The trainer-made tests/data/tiny_spm.model (libsentencepiece's own normalizer tables).
  fixed->push_back({MustLoad(model::LoadSentencePieceModel(MUNINN_SOURCE_DIR
                                                           "/tests/data/tiny_spm.model"),
                             "tests/data/tiny_spm.model"),
                    Fixed::kNone, true});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t selector = data[0];
  const Fixed& f = (*fixed)[(selector & 0x0F) % fixed->size()];
  const model::Tokenizer& t = *f.tokenizer;
  std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  if (selector & 0x10) {
    // As a chat message: the special tokens of the template are parsed, the content is text.
    const model::ChatTemplate tmpl = model::ChatTemplate::Of(
        selector & 0x20 ? model::ChatTemplateKind::kLlama3 : model::ChatTemplateKind::kChatMl,
        "You are helpful.");
    const model::ChatMessage messages[] = {{"user", text}};
    auto prompt = tmpl.Render(messages, /*add_generation_prompt=*/true);
    fuzz::FuzzCheck(prompt.ok(), "rendering a user message");
    const auto ids = t.Encode(*prompt, /*add_special=*/false, /*parse_special=*/true);
    for (model::TokenId id : ids) fuzz::FuzzCheck(id >= 0 && id < t.vocab_size(), "chat ids");
    const std::string streamed = fuzz::StreamDecode(t, ids);
    if (f.stream_equals_decode) {
      fuzz::FuzzCheck(streamed == model::unicode::SanitizeUtf8(t.Decode(ids, /*skip_special=*/true)),
                      "streamed chat == sanitized Decode");
    }
    return 0;
  }
  const std::vector<model::TokenId> ids = fuzz::ExerciseTokenizer(t, text, /*max_vocab_walk=*/0);
  const std::string decoded = t.Decode(ids, /*skip_special=*/true);
  if (f.round_trip == Fixed::kExact) fuzz::FuzzCheck(decoded == text, "Decode(Encode(x)) == x");
  if (f.round_trip == Fixed::kSpaceMarkIsSpace && !HasAtomicToken(t, ids)) {
    std::string want = text;
    for (size_t pos; (pos = want.find("\xE2\x96\x81")) != std::string::npos;) {
      want.replace(pos, 3, " ");
    }
    fuzz::FuzzCheck(decoded == want, "Decode(Encode(x)) == x with ▁ as space");
  }
  if (f.stream_equals_decode) {
    fuzz::FuzzCheck(fuzz::StreamDecode(t, ids) == model::unicode::SanitizeUtf8(decoded),
                    "streamed == sanitized Decode");
  }
  return 0;
}
