#include "wordpiece_tokenizer.h"

#include <string>

#include "unicode.h"

namespace muninn::model::internal {

namespace {

bool IsChineseChar(uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// BERT's "control": general category C* (and unassigned), except tab, newline, carriage return
// which count as whitespace.
bool IsBertControl(uint32_t cp) {
  if (cp == '\t' || cp == '\n' || cp == '\r') return false;
  const auto cat = unicode::Category(cp);
  return cat == unicode::CategoryClass::kOther || cat == unicode::CategoryClass::kUnassigned;
}

bool IsBertPunctuation(uint32_t cp) {
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
      (cp >= 123 && cp <= 126)) {
    return true;
  }
  return unicode::Category(cp) == unicode::CategoryClass::kPunctuation;
}

void ReplaceAll(std::string* s, std::string_view from, std::string_view to) {
  size_t pos = 0;
  while ((pos = s->find(from, pos)) != std::string::npos) {
    s->replace(pos, from.size(), to);
    pos += to.size();
  }
}

}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> WordPieceTokenizer::Create(const VocabSpec& spec) {
  std::unique_ptr<WordPieceTokenizer> t(new WordPieceTokenizer());
  RETURN_IF_ERROR(t->Init(spec));
  return std::unique_ptr<Tokenizer>(std::move(t));
}

Status WordPieceTokenizer::Init(const VocabSpec& spec) {
  VocabSpec s = spec;
  // [CLS]/[SEP] wrap the text; BOS/EOS flags do not apply.
  s.add_bos = false;
  s.add_eos = false;
  RETURN_IF_ERROR(InitVocab(s, /*default_add_bos=*/false));
  RETURN_IF_ERROR(CheckOptionalId("cls", spec.cls_id, tokens_.size()));
  RETURN_IF_ERROR(CheckOptionalId("sep", spec.sep_id, tokens_.size()));
  cls_id_ = spec.cls_id != kNoToken ? spec.cls_id : TokenIdOf("[CLS]");
  sep_id_ = spec.sep_id != kNoToken ? spec.sep_id : TokenIdOf("[SEP]");
  if (unk_id_ == kNoToken) unk_id_ = TokenIdOf("[UNK]");
  if (unk_id_ == kNoToken) {
    return InvalidArgumentError(
        "WordPiece vocabulary has no [UNK] token; words it cannot spell "
        "would be lost");
  }
  add_cls_sep_ = spec.add_bos.value_or(true);
  lowercase_ = spec.lowercase;
  strip_accents_ = spec.strip_accents.value_or(spec.lowercase);
  handle_chinese_chars_ = spec.handle_chinese_chars;
  clean_text_ = spec.clean_text;
  prefix_ = spec.continuing_subword_prefix;
  if (spec.max_input_chars_per_word <= 0) {
    return InvalidArgumentError("WordPiece max_input_chars_per_word must be positive");
  }
  max_chars_per_word_ = static_cast<size_t>(spec.max_input_chars_per_word);
  // The special tokens BERT vocabularies carry are control tokens even when a vocab.txt gives no
  // types.
  for (const char* name : {"[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"}) {
    const TokenId id = TokenIdOf(name);
    if (id != kNoToken && types_[static_cast<size_t>(id)] == TokenType::kNormal) {
      types_[static_cast<size_t>(id)] = TokenType::kControl;
      special_.Add(name, id, /*is_control=*/true);
    }
  }
  special_.Build();
  return Status::Ok();
}

std::string WordPieceTokenizer::Normalize(std::string_view text) const {
  std::vector<uint32_t> cps;
  cps.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const unicode::Utf8Unit u = unicode::DecodeOne(text, pos);
    pos += u.length;
    uint32_t cp = u.cp == unicode::kInvalidCodePoint ? unicode::kReplacementChar : u.cp;
    if (clean_text_) {
      if (cp == 0 || cp == unicode::kReplacementChar || IsBertControl(cp)) continue;
      if (unicode::IsWhitespace(cp)) cp = ' ';
    }
    if (handle_chinese_chars_ && IsChineseChar(cp)) {
      cps.push_back(' ');
      cps.push_back(cp);
      cps.push_back(' ');
    } else {
      cps.push_back(cp);
    }
  }
  if (strip_accents_) {
    std::vector<uint32_t> decomposed;
    decomposed.reserve(cps.size());
    for (uint32_t cp : cps) unicode::AppendNfd(cp, &decomposed);
    cps.clear();
    for (uint32_t cp : decomposed) {
      if (!unicode::IsMarkNonspacing(cp)) cps.push_back(cp);
    }
  }
  if (lowercase_) {
    std::vector<uint32_t> lowered;
    lowered.reserve(cps.size());
    for (uint32_t cp : cps) unicode::AppendLower(cp, &lowered);
    cps.swap(lowered);
  }
  std::string out;
  out.reserve(cps.size());
  for (uint32_t cp : cps) unicode::AppendUtf8(cp, &out);
  return out;
}

void WordPieceTokenizer::EncodeFragment(std::string_view text, bool at_text_start,
                                        std::vector<TokenId>* out) const {
  const std::string norm = Normalize(text);
  // BertPreTokenizer: whitespace separates words, each punctuation char is a word of its own.
  size_t word_start = 0;
  size_t pos = 0;
  auto flush = [&](size_t end) {
    if (end > word_start)
      EncodeWord(std::string_view(norm).substr(word_start, end - word_start), out);
  };
  while (pos < norm.size()) {
    const unicode::Utf8Unit u = unicode::DecodeOne(norm, pos);
    if (unicode::IsWhitespace(u.cp)) {
      flush(pos);
      word_start = pos + u.length;
    } else if (IsBertPunctuation(u.cp)) {
      flush(pos);
      EncodeWord(std::string_view(norm).substr(pos, u.length), out);
      word_start = pos + u.length;
    }
    pos += u.length;
  }
  flush(norm.size());
}

void WordPieceTokenizer::EncodeWord(std::string_view word, std::vector<TokenId>* out) const {
  std::vector<size_t> boundaries;  // byte offset of every char, plus the end
  for (size_t pos = 0; pos < word.size();) {
    boundaries.push_back(pos);
    pos += unicode::DecodeOne(word, pos).length;
  }
  const size_t n_chars = boundaries.size();
  boundaries.push_back(word.size());
  if (n_chars > max_chars_per_word_) {
    out->push_back(unk_id_);
    return;
  }
  const size_t mark = out->size();
  std::string candidate;
  size_t start = 0;
  while (start < n_chars) {
    TokenId found = kNoToken;
    size_t end = n_chars;
    for (; end > start; --end) {
      candidate.clear();
      if (start > 0) candidate = prefix_;
      candidate.append(word.substr(boundaries[start], boundaries[end] - boundaries[start]));
      found = TokenIdOf(candidate);
      if (found != kNoToken) break;
    }
    if (found == kNoToken) {
      out->resize(mark);
      out->push_back(unk_id_);
      return;
    }
    out->push_back(found);
    start = end;
  }
}

std::string WordPieceTokenizer::NormalPiece(TokenId id) const {
  const std::string& text = tokens_[static_cast<size_t>(id)];
  if (!prefix_.empty() && text.starts_with(prefix_)) return text.substr(prefix_.size());
  return " " + text;
}

std::string WordPieceTokenizer::TokenToPiece(TokenId id) const {
  if (!InRange(id)) return {};
  const TokenType t = types_[static_cast<size_t>(id)];
  if (t == TokenType::kControl || t == TokenType::kUserDefined) {
    return " " + tokens_[static_cast<size_t>(id)];
  }
  return NormalPiece(id);
}

std::string WordPieceTokenizer::Decode(std::span<const TokenId> ids, bool skip_special) const {
  std::string out = Tokenizer::Decode(ids, skip_special);
  // The WordPiece decoder's cleanup: no space before punctuation and English contractions.
  static constexpr std::pair<std::string_view, std::string_view> kCleanup[] = {
      {" .", "."},   {" ?", "?"},     {" !", "!"},    {" ,", ","},
      {" ' ", "'"},  {" n't", "n't"}, {" 'm", "'m"},  {" do not", " don't"},
      {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kCleanup) ReplaceAll(&out, from, to);
  return out;
}

void WordPieceTokenizer::AddSpecialPrefix(std::vector<TokenId>* out) const {
  if (add_cls_sep_ && cls_id_ != kNoToken) out->push_back(cls_id_);
}

void WordPieceTokenizer::AddSpecialSuffix(std::vector<TokenId>* out) const {
  if (add_cls_sep_ && sep_id_ != kNoToken) out->push_back(sep_id_);
}

}  // namespace muninn::model::internal
