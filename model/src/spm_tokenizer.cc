#include "spm_tokenizer.h"

#include <cstdio>
#include <queue>
#include <string>

#include "unicode.h"

namespace muninn::model::internal {

namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581 ▁

// Parses "<0xAB>"; -1 if `text` is not a byte token.
int ParseByteToken(std::string_view text) {
  if (text.size() != 6 || !text.starts_with("<0x") || text[5] != '>') return -1;
  int value = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = text[i];
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + d;
  }
  return value;
}

}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> SpmTokenizer::Create(const VocabSpec& spec) {
  std::unique_ptr<SpmTokenizer> t(new SpmTokenizer());
  RETURN_IF_ERROR(t->Init(spec));
  return std::unique_ptr<Tokenizer>(std::move(t));
}

Status SpmTokenizer::Init(const VocabSpec& spec) {
  RETURN_IF_ERROR(InitVocab(spec, /*default_add_bos=*/true));
  scores_ = spec.scores;
  scores_.resize(tokens_.size(), 0.0f);
  add_space_prefix_ = spec.add_space_prefix.value_or(true);
  byte_token_.fill(kNoToken);
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const int b = ParseByteToken(tokens_[i]);
    if (b < 0) continue;
    // Vocabularies without token types still mark bytes with the <0xXX> spelling.
    if (types_[i] == TokenType::kNormal && spec.token_types.empty()) types_[i] = TokenType::kByte;
    if (types_[i] == TokenType::kByte && byte_token_[static_cast<size_t>(b)] == kNoToken) {
      byte_token_[static_cast<size_t>(b)] = static_cast<TokenId>(i);
    }
  }
  return Status::Ok();
}

void SpmTokenizer::EmitPiece(std::string_view piece, std::vector<TokenId>* out) const {
  const TokenId id = TokenIdOf(piece);
  if (id != kNoToken && types_[static_cast<size_t>(id)] != TokenType::kByte) {
    out->push_back(id);
    return;
  }
  // An unmerged piece is a single character; it becomes its bytes, or one <unk> when the
  // vocabulary cannot spell all of them.
  bool all_bytes = true;
  for (char ch : piece) all_bytes = all_bytes && byte_token_[static_cast<uint8_t>(ch)] != kNoToken;
  if (!all_bytes) {
    if (unk_id_ != kNoToken) out->push_back(unk_id_);
    return;
  }
  for (char ch : piece) out->push_back(byte_token_[static_cast<uint8_t>(ch)]);
}

void SpmTokenizer::EncodeFragment(std::string_view text, bool at_text_start,
                                  std::vector<TokenId>* out) const {
  // [n_bytes] the normalised text: optional leading ▁, every space replaced by ▁.
  std::string norm;
  norm.reserve(text.size() + 3);
  if (add_space_prefix_) norm += kSpaceMark;
  for (char ch : text) {
    if (ch == ' ') {
      norm += kSpaceMark;
    } else {
      norm.push_back(ch);
    }
  }
  struct Symbol {
    uint32_t offset;
    uint32_t length;  // 0 once merged into its left neighbour
    int32_t prev;
    int32_t next;
  };
  std::vector<Symbol> sym;
  sym.reserve(norm.size());
  for (size_t pos = 0; pos < norm.size();) {
    const unicode::Utf8Unit u = unicode::DecodeOne(norm, pos);
    const auto i = static_cast<int32_t>(sym.size());
    sym.push_back({u.offset, u.length, i - 1, -1});
    if (i > 0) sym[static_cast<size_t>(i - 1)].next = i;
    pos += u.length;
  }
  struct Bigram {
    float score;
    int32_t left;
    int32_t right;
    uint32_t length;  // total bytes when queued; stale if either side changed
    bool operator<(const Bigram& o) const {
      return score != o.score ? score < o.score : left > o.left;
    }
  };
  std::priority_queue<Bigram> heap;
  auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = sym[static_cast<size_t>(left)];
    const Symbol& r = sym[static_cast<size_t>(right)];
    const TokenId id = TokenIdOf(std::string_view(norm).substr(l.offset, l.length + r.length));
    if (id == kNoToken) return;
    heap.push({scores_[static_cast<size_t>(id)], left, right, l.length + r.length});
  };
  for (size_t i = 1; i < sym.size(); ++i) {
    consider(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
  }
  while (!heap.empty()) {
    const Bigram b = heap.top();
    heap.pop();
    Symbol& l = sym[static_cast<size_t>(b.left)];
    Symbol& r = sym[static_cast<size_t>(b.right)];
    if (l.length == 0 || r.length == 0 || l.length + r.length != b.length || l.next != b.right) {
      continue;
    }
    l.length += r.length;
    r.length = 0;
    l.next = r.next;
    if (r.next >= 0) sym[static_cast<size_t>(r.next)].prev = b.left;
    consider(l.prev, b.left);
    consider(b.left, l.next);
  }
  for (int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[static_cast<size_t>(i)].next) {
    const Symbol& s = sym[static_cast<size_t>(i)];
    EmitPiece(std::string_view(norm).substr(s.offset, s.length), out);
  }
}

std::string SpmTokenizer::NormalPiece(TokenId id) const {
  const std::string& text = tokens_[static_cast<size_t>(id)];
  if (types_[static_cast<size_t>(id)] == TokenType::kByte) {
    const int b = ParseByteToken(text);
    if (b >= 0) return std::string(1, static_cast<char>(b));
  }
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    if (std::string_view(text).substr(pos).starts_with(kSpaceMark)) {
      out.push_back(' ');
      pos += kSpaceMark.size();
    } else {
      out.push_back(text[pos++]);
    }
  }
  return out;
}

}  // namespace muninn::model::internal
