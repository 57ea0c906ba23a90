#include "bpe_tokenizer.h"

#include <queue>
#include <string>

#include "unicode.h"

namespace muninn::model::internal {

std::array<uint32_t, 256> ByteToCodePointTable() {
  // Printable Latin-1 bytes stand for themselves; the rest (controls, space, 0x7F-0xA0, 0xAD)
  // are moved to U+0100 upwards in byte order, so that no token contains whitespace.
  std::array<uint32_t, 256> table{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    table[b] = printable ? b : next++;
  }
  return table;
}

StatusOr<std::unique_ptr<Tokenizer>> BpeTokenizer::Create(const VocabSpec& spec,
                                                          PreTokenizerFlavor flavor) {
  std::unique_ptr<BpeTokenizer> t(new BpeTokenizer());
  RETURN_IF_ERROR(t->Init(spec, flavor));
  return std::unique_ptr<Tokenizer>(std::move(t));
}

Status BpeTokenizer::Init(const VocabSpec& spec, PreTokenizerFlavor flavor) {
  RETURN_IF_ERROR(InitVocab(spec, /*default_add_bos=*/false));
  flavor_ = flavor;
  add_prefix_space_ = spec.add_space_prefix.value_or(false);
  ignore_merges_ = spec.ignore_merges;
  byte_to_cp_ = ByteToCodePointTable();
  for (uint32_t b = 0; b < 256; ++b) {
    cp_to_byte_[byte_to_cp_[b]] = static_cast<uint8_t>(b);
    byte_to_id_[b] = TokenIdOf(unicode::EncodeUtf8(byte_to_cp_[b]));
  }
  merges_.reserve(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const std::string& m = spec.merges[rank];
    const size_t sp = m.find(' ', 1);
    if (sp == std::string::npos || sp + 1 >= m.size()) {
      return InvalidArgumentError("BPE merge " + std::to_string(rank) + " ('" + m.substr(0, 64) +
                                  "') is not two tokens separated by a space");
    }
    const std::string left = m.substr(0, sp);
    const std::string right = m.substr(sp + 1);
    const TokenId a = TokenIdOf(left);
    const TokenId b = TokenIdOf(right);
    const TokenId ab = TokenIdOf(left + right);
    // Merges whose parts or result are not in the vocabulary can never fire; skip them like the
    // reference implementations do.
    if (a == kNoToken || b == kNoToken || ab == kNoToken) continue;
    merges_.emplace(PairKey(a, b), Merge{static_cast<int32_t>(rank), ab});
  }
  return Status::Ok();
}

void BpeTokenizer::EncodeFragment(std::string_view text, bool at_text_start,
                                  std::vector<TokenId>* out) const {
  std::string prefixed;
  if (add_prefix_space_ && (text.empty() || text[0] != ' ')) {
    prefixed = " ";
    prefixed += text;
    text = prefixed;
  }
  std::vector<std::string_view> words;
  PreTokenize(flavor_, text, &words);
  for (std::string_view w : words) EncodeWord(w, out);
}

void BpeTokenizer::EncodeWord(std::string_view word, std::vector<TokenId>* out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    std::string mapped;
    for (char ch : word) unicode::AppendUtf8(byte_to_cp_[static_cast<uint8_t>(ch)], &mapped);
    const TokenId whole = TokenIdOf(mapped);
    if (whole != kNoToken) {
      out->push_back(whole);
      return;
    }
  }
  // Symbols form a doubly linked list over the word's bytes; a min-heap holds candidate merges
  // ordered by (rank, position), validated lazily when popped.
  struct Symbol {
    TokenId id;
    int32_t prev;
    int32_t next;
  };
  const auto n = static_cast<int32_t>(word.size());
  std::vector<Symbol> sym(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    sym[static_cast<size_t>(i)] = {byte_to_id_[static_cast<uint8_t>(word[static_cast<size_t>(i)])],
                                   i - 1, i + 1 < n ? i + 1 : -1};
  }
  struct Candidate {
    int32_t rank;
    int32_t left;
    TokenId left_id;
    TokenId right_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto consider = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = sym[static_cast<size_t>(left)].next;
    if (right < 0) return;
    const TokenId a = sym[static_cast<size_t>(left)].id;
    const TokenId b = sym[static_cast<size_t>(right)].id;
    if (a == kNoToken || b == kNoToken) return;
    auto it = merges_.find(PairKey(a, b));
    if (it != merges_.end()) heap.push({it->second.rank, left, a, b});
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);
  std::vector<bool> dead(static_cast<size_t>(n), false);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& l = sym[static_cast<size_t>(c.left)];
    if (dead[static_cast<size_t>(c.left)] || l.id != c.left_id || l.next < 0) continue;
    Symbol& r = sym[static_cast<size_t>(l.next)];
    if (r.id != c.right_id) continue;
    l.id = merges_.at(PairKey(c.left_id, c.right_id)).result;
    dead[static_cast<size_t>(l.next)] = true;
    l.next = r.next;
    if (l.next >= 0) sym[static_cast<size_t>(l.next)].prev = c.left;
    consider(l.prev);
    consider(c.left);
  }
  for (int32_t i = 0; i >= 0; i = sym[static_cast<size_t>(i)].next) {
    // A byte the vocabulary cannot spell is dropped, never mapped to <unk>: in byte-level
    // vocabularies "unk" is usually an end-of-text alias (SmolLM2: <|endoftext|>), and emitting
    // it mid-text would change what the model sees far more than one missing byte.
    const TokenId id = sym[static_cast<size_t>(i)].id;
    if (id != kNoToken) out->push_back(id);
  }
}

std::string BpeTokenizer::NormalPiece(TokenId id) const {
  const std::string& text = tokens_[static_cast<size_t>(id)];
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const unicode::Utf8Unit u = unicode::DecodeOne(text, pos);
    auto it = u.cp == unicode::kInvalidCodePoint ? cp_to_byte_.end() : cp_to_byte_.find(u.cp);
    if (it != cp_to_byte_.end()) {
      out.push_back(static_cast<char>(it->second));
    } else {
      // Not a byte-level character: keep the text as it is.
      out.append(text, pos, u.length);
    }
    pos += u.length;
  }
  return out;
}

}  // namespace muninn::model::internal
