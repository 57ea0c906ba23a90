// Byte-level BPE (GPT-2 family: SmolLM2, Llama-3, Qwen2, Huginn). Text is split into words by the
// pre-tokenizer, each byte of a word is mapped to a printable code point (GPT-2's byte<->unicode
// table), and merges are applied lowest rank first. Every byte sequence round-trips when the
// vocabulary has all 256 byte tokens; bytes it lacks (SmolLM2 has no token for some bytes that
// never occur in UTF-8 text) are dropped.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <unordered_map>

#include "pretokenizer.h"
#include "vocab_tokenizer.h"

namespace muninn::model::internal {

class BpeTokenizer final : public VocabTokenizer {
 public:
  static StatusOr<std::unique_ptr<Tokenizer>> Create(const VocabSpec& spec,
                                                     PreTokenizerFlavor flavor);
  TokenizerKind kind() const override { return TokenizerKind::kByteLevelBpe; }

 protected:
  void EncodeFragment(std::string_view text, bool at_text_start,
                      std::vector<TokenId>* out) const override;
  std::string NormalPiece(TokenId id) const override;

 private:
  BpeTokenizer() = default;
  Status Init(const VocabSpec& spec, PreTokenizerFlavor flavor);
  void EncodeWord(std::string_view word, std::vector<TokenId>* out) const;

  struct Merge {
    int32_t rank;
    TokenId result;
  };
  static uint64_t PairKey(TokenId a, TokenId b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  PreTokenizerFlavor flavor_ = PreTokenizerFlavor::kGpt2;
  bool add_prefix_space_ = false;
  bool ignore_merges_ = false;
  std::unordered_map<uint64_t, Merge> merges_;  // (left id, right id) -> rank, merged id
  std::array<TokenId, 256> byte_to_id_{};       // id of each byte's single-char token, or -1
  std::array<uint32_t, 256> byte_to_cp_{};      // GPT-2 byte -> printable code point
  std::unordered_map<uint32_t, uint8_t> cp_to_byte_;
};

// GPT-2's printable code point for each byte.
std::array<uint32_t, 256> ByteToCodePointTable();

}  // namespace muninn::model::internal
