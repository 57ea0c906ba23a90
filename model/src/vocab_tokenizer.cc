#include "vocab_tokenizer.h"

#include <algorithm>
#include <string>

#include "unicode.h"

namespace muninn::model {

const char* TokenizerKindName(TokenizerKind kind) {
  switch (kind) {
    case TokenizerKind::kByteLevelBpe:
      return "byte-level BPE";
    case TokenizerKind::kSentencePiece:
      return "SentencePiece (GGUF vocab)";
    case TokenizerKind::kSentencePieceModel:
      return "SentencePiece (libsentencepiece)";
    case TokenizerKind::kWordPiece:
      return "WordPiece";
  }
  return "unknown";
}

bool Tokenizer::IsEog(TokenId id) const {
  return id != kNoToken && std::find(eog_ids_.begin(), eog_ids_.end(), id) != eog_ids_.end();
}

std::string Tokenizer::Decode(std::span<const TokenId> ids, bool skip_special) const {
  std::string out;
  bool first = true;
  for (TokenId id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special && GetTokenType(id) == TokenType::kControl) continue;
    std::string piece = TokenToPiece(id);
    if (first && strips_leading_space() && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    first = false;
    out += piece;
  }
  return out;
}

std::string IncrementalDetokenizer::Push(TokenId id) {
  if (id < 0 || id >= tokenizer_.vocab_size()) return {};
  if (skip_special_ && tokenizer_.GetTokenType(id) == TokenType::kControl) return {};
  std::string piece = tokenizer_.TokenToPiece(id);
  if (at_start_ && tokenizer_.strips_leading_space() && !piece.empty() && piece[0] == ' ') {
    piece.erase(0, 1);
  }
  at_start_ = false;
  pending_ += piece;
  const size_t n = model::unicode::CompletePrefixLength(pending_);
  // Bytes before the held-back tail that are invalid on their own are replaced now: no later
  // byte can make them valid.
  std::string out = unicode::SanitizeUtf8(std::string_view(pending_).substr(0, n));
  pending_.erase(0, n);
  return out;
}

std::string IncrementalDetokenizer::Flush() {
  std::string out = unicode::SanitizeUtf8(pending_);
  pending_.clear();
  return out;
}

namespace internal {

void SpecialTokenMatcher::Add(std::string text, TokenId id, bool is_control) {
  if (text.empty()) return;
  const auto first = static_cast<uint8_t>(text[0]);
  entries_.push_back({std::move(text), id, is_control});
  by_first_byte_[first].push_back(static_cast<uint32_t>(entries_.size() - 1));
}

void SpecialTokenMatcher::Build() {
  for (auto& bucket : by_first_byte_) {
    std::stable_sort(bucket.begin(), bucket.end(), [this](uint32_t a, uint32_t b) {
      return entries_[a].text.size() > entries_[b].text.size();
    });
  }
}

const SpecialTokenMatcher::Entry* SpecialTokenMatcher::MatchAt(std::string_view text, size_t pos,
                                                               bool parse_control) const {
  const auto& bucket = by_first_byte_[static_cast<uint8_t>(text[pos])];
  const std::string_view rest = text.substr(pos);
  for (uint32_t i : bucket) {
    const Entry& e = entries_[i];
    if (e.is_control && !parse_control) continue;
    if (rest.starts_with(e.text)) return &e;
  }
  return nullptr;
}

Status CheckOptionalId(const char* what, TokenId id, size_t n_vocab) {
  if (id == kNoToken) return Status::Ok();
  if (id < 0 || static_cast<size_t>(id) >= n_vocab) {
    return InvalidArgumentError(std::string("tokenizer ") + what + " id " + std::to_string(id) +
                                " is outside the vocabulary of " + std::to_string(n_vocab) +
                                " tokens; the tokenizer metadata is corrupt");
  }
  return Status::Ok();
}

Status VocabTokenizer::InitVocab(const VocabSpec& spec, bool default_add_bos) {
  const size_t n = spec.tokens.size();
  if (n == 0) return InvalidArgumentError("tokenizer vocabulary is empty");
  if (n > static_cast<size_t>(INT32_MAX)) {
    return InvalidArgumentError("tokenizer vocabulary has too many tokens");
  }
  if (!spec.token_types.empty() && spec.token_types.size() != n) {
    return InvalidArgumentError("tokenizer has " + std::to_string(spec.token_types.size()) +
                                " token types for " + std::to_string(n) + " tokens");
  }
  if (!spec.scores.empty() && spec.scores.size() != n) {
    return InvalidArgumentError("tokenizer has " + std::to_string(spec.scores.size()) +
                                " scores for " + std::to_string(n) + " tokens");
  }
  RETURN_IF_ERROR(CheckOptionalId("bos", spec.bos_id, n));
  RETURN_IF_ERROR(CheckOptionalId("eos", spec.eos_id, n));
  RETURN_IF_ERROR(CheckOptionalId("unk", spec.unk_id, n));
  RETURN_IF_ERROR(CheckOptionalId("pad", spec.pad_id, n));
  RETURN_IF_ERROR(CheckOptionalId("sep", spec.sep_id, n));
  RETURN_IF_ERROR(CheckOptionalId("cls", spec.cls_id, n));
  for (TokenId id : spec.extra_eog_ids) RETURN_IF_ERROR(CheckOptionalId("end-of-turn", id, n));
  tokens_ = spec.tokens;
  types_.assign(n, TokenType::kNormal);
  for (size_t i = 0; i < spec.token_types.size(); ++i) {
    const int32_t t = spec.token_types[i];
    if (t < 0 || t > static_cast<int32_t>(TokenType::kByte)) {
      return InvalidArgumentError("token " + std::to_string(i) + " has unknown type " +
                                  std::to_string(t));
    }
    types_[i] = static_cast<TokenType>(t);
  }
  token_to_id_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    // First occurrence wins for duplicated strings, as in the reference implementations.
    token_to_id_.emplace(tokens_[i], static_cast<TokenId>(i));
    if (types_[i] == TokenType::kControl || types_[i] == TokenType::kUserDefined) {
      special_.Add(tokens_[i], static_cast<TokenId>(i), types_[i] == TokenType::kControl);
    }
  }
  special_.Build();
  bos_id_ = spec.bos_id;
  eos_id_ = spec.eos_id;
  unk_id_ = spec.unk_id;
  pad_id_ = spec.pad_id;
  add_bos_ = spec.add_bos.value_or(default_add_bos) && bos_id_ != kNoToken;
  add_eos_ = spec.add_eos.value_or(false) && eos_id_ != kNoToken;
  eog_ids_.clear();
  if (eos_id_ != kNoToken) eog_ids_.push_back(eos_id_);
  for (TokenId id : spec.extra_eog_ids) {
    // kNoToken passes CheckOptionalId ("none") but is no end-of-generation id (found by
    // tests/fuzz/vocab_spec_fuzz.cc).
    if (id == kNoToken) continue;
    if (std::find(eog_ids_.begin(), eog_ids_.end(), id) == eog_ids_.end()) eog_ids_.push_back(id);
  }
  return Status::Ok();
}

void VocabTokenizer::AddSpecialPrefix(std::vector<TokenId>* out) const {
  if (add_bos_) out->push_back(bos_id_);
}

void VocabTokenizer::AddSpecialSuffix(std::vector<TokenId>* out) const {
  if (add_eos_) out->push_back(eos_id_);
}

std::vector<TokenId> VocabTokenizer::Encode(std::string_view text, bool add_special,
                                            bool parse_special) const {
  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special) AddSpecialPrefix(&out);
  bool at_start = true;
  special_.Split(
      text, parse_special,
      [&](std::string_view fragment) {
        EncodeFragment(fragment, at_start, &out);
        at_start = false;
      },
      [&](TokenId id) {
        out.push_back(id);
        at_start = false;
      });
  if (add_special) AddSpecialSuffix(&out);
  return out;
}

std::string VocabTokenizer::TokenToPiece(TokenId id) const {
  if (!InRange(id)) return {};
  const TokenType t = types_[static_cast<size_t>(id)];
  if (t == TokenType::kControl || t == TokenType::kUserDefined) {
    return tokens_[static_cast<size_t>(id)];
  }
  return NormalPiece(id);
}

std::string_view VocabTokenizer::TokenText(TokenId id) const {
  return InRange(id) ? std::string_view(tokens_[static_cast<size_t>(id)]) : std::string_view();
}

TokenType VocabTokenizer::GetTokenType(TokenId id) const {
  return InRange(id) ? types_[static_cast<size_t>(id)] : TokenType::kUndefined;
}

TokenId VocabTokenizer::TokenIdOf(std::string_view text) const {
  auto it = token_to_id_.find(std::string(text));
  return it == token_to_id_.end() ? kNoToken : it->second;
}

}  // namespace internal
}  // namespace muninn::model
