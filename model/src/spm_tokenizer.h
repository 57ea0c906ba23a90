// SentencePiece-style tokenizer for GGUF "llama" vocabularies (and tokenizer.json BPE models with
// byte_fallback): spaces become U+2581 "▁", adjacent pieces are merged highest score first while
// the merged piece is in the vocabulary, and characters outside it fall back to <0xXX> byte
// tokens (or <unk> when the vocabulary has none).
#pragma once

#include <array>
#include <memory>

#include "vocab_tokenizer.h"

namespace muninn::model::internal {

class SpmTokenizer final : public VocabTokenizer {
 public:
  static StatusOr<std::unique_ptr<Tokenizer>> Create(const VocabSpec& spec);
  TokenizerKind kind() const override { return TokenizerKind::kSentencePiece; }
  bool strips_leading_space() const override { return add_space_prefix_; }

 protected:
  void EncodeFragment(std::string_view text, bool at_text_start,
                      std::vector<TokenId>* out) const override;
  std::string NormalPiece(TokenId id) const override;

 private:
  SpmTokenizer() = default;
  Status Init(const VocabSpec& spec);
  void EmitPiece(std::string_view piece, std::vector<TokenId>* out) const;

  std::vector<float> scores_;  // [n_vocab]
  bool add_space_prefix_ = true;
  std::array<TokenId, 256> byte_token_{};  // <0xXX> ids, or kNoToken
};

}  // namespace muninn::model::internal
