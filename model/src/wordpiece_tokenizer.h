// BERT WordPiece (all-MiniLM-L6-v2 and friends): BertNormalizer (clean text, isolate CJK
// ideographs, strip accents, lowercase), BertPreTokenizer (split on whitespace, isolate
// punctuation), then greedy longest-match-first pieces with a "##" continuation prefix.
// add_special wraps the ids in [CLS] ... [SEP]. No truncation here: callers cut to their
// model's window (512 positions for MiniLM).
#pragma once

#include <memory>

#include "vocab_tokenizer.h"

namespace muninn::model::internal {

class WordPieceTokenizer final : public VocabTokenizer {
 public:
  static StatusOr<std::unique_ptr<Tokenizer>> Create(const VocabSpec& spec);
  TokenizerKind kind() const override { return TokenizerKind::kWordPiece; }
  std::string Decode(std::span<const TokenId> ids, bool skip_special) const override;
  std::string TokenToPiece(TokenId id) const override;
  bool strips_leading_space() const override { return true; }

  // The normalised text (exposed for tests).
  std::string Normalize(std::string_view text) const;

 protected:
  void EncodeFragment(std::string_view text, bool at_text_start,
                      std::vector<TokenId>* out) const override;
  std::string NormalPiece(TokenId id) const override;
  void AddSpecialPrefix(std::vector<TokenId>* out) const override;
  void AddSpecialSuffix(std::vector<TokenId>* out) const override;

 private:
  WordPieceTokenizer() = default;
  Status Init(const VocabSpec& spec);
  void EncodeWord(std::string_view word, std::vector<TokenId>* out) const;

  TokenId cls_id_ = kNoToken;
  TokenId sep_id_ = kNoToken;
  bool add_cls_sep_ = true;
  bool lowercase_ = true;
  bool strip_accents_ = true;
  bool handle_chinese_chars_ = true;
  bool clean_text_ = true;
  std::string prefix_ = "##";
  size_t max_chars_per_word_ = 100;
};

}  // namespace muninn::model::internal
