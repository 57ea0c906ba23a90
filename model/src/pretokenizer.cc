#include "pretokenizer.h"

#include <string>

#include "unicode.h"

namespace muninn::model::internal {

namespace {

// The regular expressions the flavours implement; also how Split pre-tokenizers are recognised.
constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

enum class Cls : uint8_t { kLetter, kNumber, kSpace, kOther };

struct Char {
  uint32_t cp;  // kInvalidCodePoint for a stray byte
  uint32_t offset;
  Cls cls;
};

std::vector<Char> Classify(std::string_view text) {
  std::vector<Char> chars;
  chars.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const unicode::Utf8Unit u = unicode::DecodeOne(text, pos);
    Cls cls = Cls::kOther;
    if (u.cp != unicode::kInvalidCodePoint) {
      if (unicode::IsWhitespace(u.cp)) {
        cls = Cls::kSpace;
      } else {
        const auto cat = unicode::Category(u.cp);
        if (cat == unicode::CategoryClass::kLetter) cls = Cls::kLetter;
        if (cat == unicode::CategoryClass::kNumber) cls = Cls::kNumber;
      }
    }
    chars.push_back({u.cp, u.offset, cls});
    pos += u.length;
  }
  return chars;
}

uint32_t Lower(uint32_t cp) { return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp; }

// Length in chars of an English contraction ('s 't 're 've 'm 'll 'd) at i, or 0.
size_t Contraction(const std::vector<Char>& c, size_t i, bool ignore_case) {
  if (c[i].cp != '\'' || i + 1 >= c.size()) return 0;
  auto at = [&](size_t k) -> uint32_t {
    if (k >= c.size()) return 0;
    return ignore_case ? Lower(c[k].cp) : c[k].cp;
  };
  const uint32_t a = at(i + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  const uint32_t b = at(i + 2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

size_t RunOf(const std::vector<Char>& c, size_t i, Cls cls) {
  size_t j = i;
  while (j < c.size() && c[j].cls == cls) ++j;
  return j;
}

// \s+(?!\S) then \s+: a whitespace run keeps its last char for the next word unless it ends the
// text or is a single char.
size_t WhitespaceRun(const std::vector<Char>& c, size_t i) {
  const size_t j = RunOf(c, i, Cls::kSpace);
  if (j == c.size() || j - i == 1) return j;
  return j - 1;
}

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t Gpt2Next(const std::vector<Char>& c, size_t i) {
  if (size_t k = Contraction(c, i, /*ignore_case=*/false); k > 0) return i + k;
  size_t j = i;
  if (c[j].cp == ' ' && j + 1 < c.size() && c[j + 1].cls != Cls::kSpace) ++j;
  if (c[j].cls != Cls::kSpace) return RunOf(c, j, c[j].cls);
  return WhitespaceRun(c, i);
}

// Llama-3 / Qwen2:
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
//  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
size_t Llama3Next(const std::vector<Char>& c, size_t i, size_t max_digits) {
  if (size_t k = Contraction(c, i, /*ignore_case=*/true); k > 0) return i + k;
  const size_t n = c.size();
  auto is_newline = [&](size_t k) { return c[k].cp == '\r' || c[k].cp == '\n'; };
  if (c[i].cls == Cls::kLetter) return RunOf(c, i, Cls::kLetter);
  if (c[i].cls != Cls::kNumber && !is_newline(i) && i + 1 < n && c[i + 1].cls == Cls::kLetter) {
    return RunOf(c, i + 1, Cls::kLetter);
  }
  if (c[i].cls == Cls::kNumber) {
    size_t j = i;
    while (j < n && j - i < max_digits && c[j].cls == Cls::kNumber) ++j;
    return j;
  }
  size_t j = i;
  if (c[j].cp == ' ' && j + 1 < n && c[j + 1].cls == Cls::kOther) ++j;
  if (c[j].cls == Cls::kOther) {
    j = RunOf(c, j, Cls::kOther);
    while (j < n && is_newline(j)) ++j;
    return j;
  }
  // c[i] is whitespace. \s*[\r\n]+ ends after the last newline of the run, if it has one.
  const size_t run_end = RunOf(c, i, Cls::kSpace);
  for (size_t k = run_end; k > i; --k) {
    if (is_newline(k - 1)) return k;
  }
  return WhitespaceRun(c, i);
}

void SplitWith(PreTokenizerFlavor flavor, std::string_view text,
               std::vector<std::string_view>* words) {
  const std::vector<Char> c = Classify(text);
  size_t i = 0;
  while (i < c.size()) {
    size_t j;
    switch (flavor) {
      case PreTokenizerFlavor::kLlama3:
        j = Llama3Next(c, i, 3);
        break;
      case PreTokenizerFlavor::kQwen2:
        j = Llama3Next(c, i, 1);
        break;
      default:
        j = Gpt2Next(c, i);
        break;
    }
    const size_t begin = c[i].offset;
    const size_t end = j < c.size() ? c[j].offset : text.size();
    words->push_back(text.substr(begin, end - begin));
    i = j;
  }
}

}  // namespace

StatusOr<PreTokenizerFlavor> PreTokenizerFromGgufName(std::string_view name) {
  if (name.empty() || name == "default" || name == "gpt2" || name == "gpt-2") {
    return PreTokenizerFlavor::kGpt2;
  }
  if (name == "smollm") return PreTokenizerFlavor::kSmollm;
  if (name == "llama3" || name == "llama-bpe" || name == "llama-v3") {
    return PreTokenizerFlavor::kLlama3;
  }
  if (name == "qwen2") return PreTokenizerFlavor::kQwen2;
  if (name == "none") return PreTokenizerFlavor::kNone;
  return UnimplementedError(
      "byte-level BPE pre-tokenizer '" + std::string(name) +
      "' is not supported (known: default, gpt2, smollm, llama-bpe, qwen2, none)");
}

StatusOr<PreTokenizerFlavor> PreTokenizerFromRegex(std::string_view pattern) {
  if (pattern == kGpt2Regex) return PreTokenizerFlavor::kGpt2;
  if (pattern == kLlama3Regex) return PreTokenizerFlavor::kLlama3;
  if (pattern == kQwen2Regex) return PreTokenizerFlavor::kQwen2;
  return UnimplementedError(
      "pre-tokenizer regex is not one muninn implements (GPT-2, Llama-3, "
      "Qwen2): " +
      std::string(pattern.substr(0, 200)));
}

const char* PreTokenizerName(PreTokenizerFlavor flavor) {
  switch (flavor) {
    case PreTokenizerFlavor::kNone:
      return "none";
    case PreTokenizerFlavor::kGpt2:
      return "gpt2";
    case PreTokenizerFlavor::kSmollm:
      return "smollm";
    case PreTokenizerFlavor::kLlama3:
      return "llama-bpe";
    case PreTokenizerFlavor::kQwen2:
      return "qwen2";
  }
  return "gpt2";
}

void PreTokenize(PreTokenizerFlavor flavor, std::string_view text,
                 std::vector<std::string_view>* words) {
  if (text.empty()) return;
  switch (flavor) {
    case PreTokenizerFlavor::kNone:
      words->push_back(text);
      return;
    case PreTokenizerFlavor::kSmollm: {
      // Every \p{N} char is a word of its own; the text between them goes through GPT-2.
      size_t start = 0;
      size_t pos = 0;
      while (pos < text.size()) {
        const unicode::Utf8Unit u = unicode::DecodeOne(text, pos);
        if (u.cp != unicode::kInvalidCodePoint && unicode::IsNumber(u.cp)) {
          if (pos > start)
            SplitWith(PreTokenizerFlavor::kGpt2, text.substr(start, pos - start), words);
          words->push_back(text.substr(pos, u.length));
          start = pos + u.length;
        }
        pos += u.length;
      }
      if (start < text.size()) SplitWith(PreTokenizerFlavor::kGpt2, text.substr(start), words);
      return;
    }
    default:
      SplitWith(flavor, text, words);
      return;
  }
}

}  // namespace muninn::model::internal
