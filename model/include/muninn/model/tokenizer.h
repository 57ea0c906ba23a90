// Tokenizer: text <-> token ids for every vocabulary muninn loads (byte-level BPE, SentencePiece
// from GGUF or tokenizer.model, BERT WordPiece). Build one with the factories in
// tokenizer_factory.h.
//
// Contract shared by all implementations:
//  - Encode accepts any bytes. Invalid UTF-8 never crashes: byte-level BPE keeps the raw bytes
//    (so Decode(Encode(x)) == x for every x), SentencePiece vocabularies use byte fallback (or
//    <unk>), WordPiece replaces them with U+FFFD first.
//  - Special tokens: "user-defined" tokens (added tokens that are not special) are always matched
//    atomically in the text; "control" tokens (<|im_start|>, <s>, [CLS]...) are matched only when
//    parse_special is true, otherwise their text is tokenized like any other text.
//  - add_special adds what the vocabulary asks for (BOS and/or EOS, or [CLS] ... [SEP]).
//  - Decode returns bytes, which may end inside a UTF-8 character for a prefix of a sequence; use
//    IncrementalDetokenizer for streaming output.
// Thread-safe: all methods are const and may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/status.h"

namespace muninn::model {

using TokenId = int32_t;
inline constexpr TokenId kNoToken = -1;

// GGUF's tokenizer.ggml.token_type values (SentencePiece's piece types).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

enum class TokenizerKind {
  kByteLevelBpe,        // GPT-2 style (GGUF "gpt2", tokenizer.json BPE + ByteLevel)
  kSentencePiece,       // GGUF "llama": score-ordered merges, ▁ for spaces, <0xXX> byte fallback
  kSentencePieceModel,  // a tokenizer.model run by libsentencepiece
  kWordPiece,           // BERT
};

const char* TokenizerKindName(TokenizerKind kind);

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual TokenizerKind kind() const = 0;

  // Token ids for `text`. See the class comment for add_special / parse_special.
  virtual std::vector<TokenId> Encode(std::string_view text, bool add_special,
                                      bool parse_special) const = 0;

  // The text of `ids`. skip_special drops control tokens (BOS, EOS, <|im_end|>, [CLS]...).
  // Out-of-range ids decode to nothing.
  virtual std::string Decode(std::span<const TokenId> ids, bool skip_special = false) const;

  // The bytes `id` contributes when it follows other tokens (byte tokens give their byte, ▁ gives a
  // space, WordPiece gives " word" or the "##" continuation without its prefix). Control tokens
  // give their text. Empty for out-of-range ids.
  virtual std::string TokenToPiece(TokenId id) const = 0;

  // The vocabulary string of `id` as stored (e.g. "Ġthe", "▁the", "##ing"); empty if out of range.
  virtual std::string_view TokenText(TokenId id) const = 0;
  virtual TokenType GetTokenType(TokenId id) const = 0;

  // Id of a vocabulary string, or kNoToken.
  virtual TokenId TokenIdOf(std::string_view text) const = 0;

  virtual int32_t vocab_size() const = 0;
  TokenId bos_id() const { return bos_id_; }
  TokenId eos_id() const { return eos_id_; }
  TokenId unk_id() const { return unk_id_; }
  TokenId pad_id() const { return pad_id_; }
  // Every id that ends a generation (eos plus e.g. <|im_end|>, <|eot_id|>, <|end_turn|>).
  const std::vector<TokenId>& eog_ids() const { return eog_ids_; }
  bool IsEog(TokenId id) const;
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }

  // Whether Decode removes the leading space of the first token (SentencePiece with a dummy
  // prefix); IncrementalDetokenizer needs it.
  virtual bool strips_leading_space() const { return false; }

 protected:
  TokenId bos_id_ = kNoToken;
  TokenId eos_id_ = kNoToken;
  TokenId unk_id_ = kNoToken;
  TokenId pad_id_ = kNoToken;
  std::vector<TokenId> eog_ids_;
  bool add_bos_ = false;
  bool add_eos_ = false;
};

// Streaming decode for generation: feed ids one at a time, get back only complete UTF-8 text.
// Bytes of a character split across tokens are held back until the character is complete; bytes
// that can never complete are replaced by U+FFFD. Not thread-safe; one per output stream.
class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive this object.
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special = true)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}

  // The text that became complete with `id` (possibly empty).
  std::string Push(TokenId id);
  // Whatever is still held back, invalid bytes replaced by U+FFFD. The stream may continue.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  bool at_start_ = true;
  std::string pending_;  // bytes not yet returned: an incomplete UTF-8 tail
};

}  // namespace muninn::model
