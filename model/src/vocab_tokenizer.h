// VocabTokenizer: the part every in-house tokenizer shares — the vocabulary (text, type, lookup),
// the special-token splitter, BOS/EOS handling and Decode built from per-token pieces.
// Subclasses encode plain-text fragments and say how a token is rendered.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/model/tokenizer.h"
#include "muninn/model/tokenizer_factory.h"

namespace muninn::model::internal {

// Finds atomic special tokens in text. Longest match wins at each position.
class SpecialTokenMatcher {
 public:
  // Adds a token; call Build() after the last Add and before Split.
  void Add(std::string text, TokenId id, bool is_control);
  // Orders the candidates of each first byte longest first.
  void Build();
  // Calls on_text(fragment) for ordinary text and on_token(id) for matched tokens, in order.
  // Control tokens are matched only when `parse_control` is true.
  template <typename OnText, typename OnToken>
  void Split(std::string_view text, bool parse_control, OnText on_text, OnToken on_token) const;
  bool empty() const { return entries_.empty(); }

 private:
  struct Entry {
    std::string text;
    TokenId id;
    bool is_control;
  };
  // Returns the longest entry matching at text[pos], or nullptr.
  const Entry* MatchAt(std::string_view text, size_t pos, bool parse_control) const;
  std::vector<Entry> entries_;
  // First byte -> indices into entries_, longest first.
  std::vector<std::vector<uint32_t>> by_first_byte_ = std::vector<std::vector<uint32_t>>(256);
};

template <typename OnText, typename OnToken>
void SpecialTokenMatcher::Split(std::string_view text, bool parse_control, OnText on_text,
                                OnToken on_token) const {
  size_t start = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const Entry* e = entries_.empty() ? nullptr : MatchAt(text, pos, parse_control);
    if (e == nullptr) {
      ++pos;
      continue;
    }
    if (pos > start) on_text(text.substr(start, pos - start));
    on_token(e->id);
    pos += e->text.size();
    start = pos;
  }
  if (start < text.size()) on_text(text.substr(start));
}

class VocabTokenizer : public Tokenizer {
 public:
  std::vector<TokenId> Encode(std::string_view text, bool add_special,
                              bool parse_special) const override;
  std::string TokenToPiece(TokenId id) const override;
  std::string_view TokenText(TokenId id) const override;
  TokenType GetTokenType(TokenId id) const override;
  TokenId TokenIdOf(std::string_view text) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(tokens_.size()); }

 protected:
  // Checks ids and sizes in `spec` and fills the shared tables. `default_add_bos` applies when
  // spec.add_bos is unset.
  Status InitVocab(const VocabSpec& spec, bool default_add_bos);
  // Appends the ids of a fragment of ordinary text (no special tokens in it).
  virtual void EncodeFragment(std::string_view text, bool at_text_start,
                              std::vector<TokenId>* out) const = 0;
  // The rendering of a normal / byte / unknown token (control and user-defined tokens render as
  // their text).
  virtual std::string NormalPiece(TokenId id) const = 0;
  // Adds the model's special prefix/suffix when add_special is set.
  virtual void AddSpecialPrefix(std::vector<TokenId>* out) const;
  virtual void AddSpecialSuffix(std::vector<TokenId>* out) const;

  bool InRange(TokenId id) const { return id >= 0 && id < vocab_size(); }

  std::vector<std::string> tokens_;  // [n_vocab]
  std::vector<TokenType> types_;     // [n_vocab]
  std::unordered_map<std::string, TokenId> token_to_id_;
  SpecialTokenMatcher special_;
};

// Validates an optional id from a vocabulary spec: kNoToken or in [0, n_vocab).
Status CheckOptionalId(const char* what, TokenId id, size_t n_vocab);

}  // namespace muninn::model::internal
