#include "muninn/tools/document_text.h"

#include <algorithm>
#include <array>

#include "muninn/tools/names.h"

namespace muninn::tools {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool IsLower(char c) { return c >= 'a' && c <= 'z'; }

// Length of the valid UTF-8 sequence at text[i], or 0 when it is not one (overlongs, surrogates
// and code points above U+10FFFF are invalid).
size_t Utf8SequenceLength(std::string_view text, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  uint32_t cp = 0;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > text.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF)) {
    return 0;
  }
  return n;
}

constexpr std::array<std::string_view, 20> kAbbreviations = {
    "Capt", "Col", "Dr",   "Gen", "Jr", "Lt", "Messrs", "Mr",  "Mrs", "Ms",
    "Mt",   "No",  "Prof", "Rev", "Sr", "St", "etc",    "vol", "vs",  "viz"};

// Length of a closing quote or bracket at text[i] (ASCII or a UTF-8 right quote), else 0.
size_t ClosingLength(std::string_view text, size_t i) {
  const char c = text[i];
  if (c == '"' || c == '\'' || c == ')' || c == ']') return 1;
  if (i + 2 < text.size() && static_cast<unsigned char>(c) == 0xE2 &&
      static_cast<unsigned char>(text[i + 1]) == 0x80 &&
      (static_cast<unsigned char>(text[i + 2]) == 0x99 ||
       static_cast<unsigned char>(text[i + 2]) == 0x9D)) {
    return 3;
  }
  return 0;
}

struct Paragraph {
  size_t begin;
  size_t end;
  int lines;
};

std::vector<Paragraph> Paragraphs(std::string_view text) {
  std::vector<Paragraph> out;
  size_t i = 0;
  bool open = false;
  Paragraph p{0, 0, 0};
  while (i < text.size()) {
    size_t eol = text.find('\n', i);
    if (eol == std::string_view::npos) eol = text.size();
    const std::string_view line = text.substr(i, eol - i);
    const bool blank = std::all_of(line.begin(), line.end(), IsSpace);
    if (blank) {
      if (open) out.push_back(p);
      open = false;
    } else {
      if (!open) p = {i, eol, 0};
      open = true;
      p.end = eol;
      ++p.lines;
    }
    i = eol + 1;
  }
  if (open) out.push_back(p);
  return out;
}

bool IsHeading(std::string_view para, int lines) {
  if (lines != 1 || para.size() > 80) return false;
  size_t b = 0;
  while (b < para.size() && IsSpace(para[b])) ++b;
  size_t e = para.size();
  while (e > b && IsSpace(para[e - 1])) --e;
  if (e == b) return false;
  const std::string_view t = para.substr(b, e - b);
  if (Words(t).size() > 10 || Words(t).empty()) return false;
  const bool all_caps = std::none_of(t.begin(), t.end(), IsLower);
  const char last = t.back();
  const bool punct_end = last == '.' || last == ',' || last == ';' || last == ':' || last == '!' ||
                         last == '?' || last == '"' || last == '\'';
  if (all_caps) return true;
  return !punct_end && (IsUpper(t[0]) || IsDigit(t[0]));
}

// Appends text[b, e) to `out` with white space collapsed and, at the start of an indented line,
// a number followed by a blank (a verse or line number) dropped. `line_start` says whether b
// opens a line and `indented` whether that line began with white space.
void AppendDisplay(std::string_view text, size_t b, size_t e, bool line_start, bool indented,
                   std::string* out) {
  bool pending_space = false;
  for (size_t i = b; i < e;) {
    const char c = text[i];
    if (c == '\n') {
      line_start = true;
      indented = false;
      pending_space = true;
      ++i;
      continue;
    }
    if (IsSpace(c)) {
      if (line_start) indented = true;
      pending_space = true;
      ++i;
      continue;
    }
    if (line_start && indented && IsDigit(c)) {
      size_t j = i;
      while (j < e && IsDigit(text[j])) ++j;
      if (j < e && (text[j] == ' ' || text[j] == '\t')) {
        i = j;
        line_start = false;
        continue;
      }
    }
    line_start = false;
    if (pending_space && !out->empty()) out->push_back(' ');
    pending_space = false;
    out->push_back(c);
    ++i;
  }
}

// The byte where the visible text of text[b, e) starts (after white space and a dropped
// line number), as AppendDisplay would see it.
size_t DisplayBegin(std::string_view text, size_t b, size_t e, bool line_start, bool indented) {
  size_t i = b;
  while (true) {
    while (i < e && IsSpace(text[i])) {
      if (text[i] == '\n') {
        line_start = true;
        indented = false;
      } else if (line_start) {
        indented = true;
      }
      ++i;
    }
    if (i < e && line_start && indented && IsDigit(text[i])) {
      size_t j = i;
      while (j < e && IsDigit(text[j])) ++j;
      if (j < e && (text[j] == ' ' || text[j] == '\t')) {
        i = j;
        line_start = false;
        continue;
      }
    }
    return i;
  }
}

void AddSentence(std::string_view text, size_t b, size_t e, SegmentedText* out) {
  // Is b at the start of a line, and was that line indented before b?
  size_t ls = b;
  while (ls > 0 && text[ls - 1] != '\n') --ls;
  const bool line_start = std::all_of(text.begin() + static_cast<std::ptrdiff_t>(ls),
                                      text.begin() + static_cast<std::ptrdiff_t>(b), IsSpace);
  const bool indented = line_start && ls < b;
  const size_t vb = DisplayBegin(text, b, e, line_start, indented);
  size_t ve = e;
  while (ve > vb && IsSpace(text[ve - 1])) --ve;
  if (ve <= vb) return;
  Sentence s;
  s.begin = static_cast<int64_t>(vb);
  s.end = static_cast<int64_t>(ve);
  AppendDisplay(text, vb, ve, false, false, &s.text);
  s.n_words = static_cast<int64_t>(Words(s.text).size());
  if (s.n_words == 0) return;
  out->sentences.push_back(std::move(s));
}

}  // namespace

bool IsAbbreviationDot(std::string_view text, size_t dot) {
  size_t b = dot;
  while (b > 0 && ((text[b - 1] >= 'a' && text[b - 1] <= 'z') || IsUpper(text[b - 1]))) --b;
  const std::string_view word = text.substr(b, dot - b);
  if (word.size() == 1 && IsUpper(word[0])) return true;
  return std::find(kAbbreviations.begin(), kAbbreviations.end(), word) != kAbbreviations.end();
}

double InvalidUtf8Fraction(std::string_view text) {
  if (text.empty()) return 0.0;
  size_t invalid = 0;
  for (size_t i = 0; i < text.size();) {
    const size_t n = Utf8SequenceLength(text, i);
    if (n == 0) {
      ++invalid;
      ++i;
    } else {
      i += n;
    }
  }
  return static_cast<double>(invalid) / static_cast<double>(text.size());
}

Status CheckDocumentText(std::string_view text, int64_t max_bytes) {
  if (static_cast<int64_t>(text.size()) > max_bytes) {
    return InvalidArgumentError("the document has " + std::to_string(text.size()) +
                                " bytes, more than the limit of " + std::to_string(max_bytes) +
                                "; pass --max-bytes " + std::to_string(text.size()) +
                                " (or more) if it really is one text");
  }
  if (std::all_of(text.begin(), text.end(), IsSpace)) {
    return InvalidArgumentError("the document is empty (or only whitespace): nothing to read");
  }
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos) {
    return InvalidArgumentError("the document holds a NUL byte at offset " + std::to_string(nul) +
                                ": it looks binary, not text; give a plain-text file (UTF-8)");
  }
  const double invalid = InvalidUtf8Fraction(text);
  if (invalid > 0.05) {
    return InvalidArgumentError(
        "the document is not UTF-8 text (" + std::to_string(static_cast<int>(invalid * 100.0)) +
        "% of its bytes are invalid UTF-8); convert it first, e.g. iconv -f latin1 -t utf-8");
  }
  return Status::Ok();
}

SegmentedText SegmentText(std::string_view text) {
  constexpr size_t kMaxSentenceBytes = 2000;  // text without punctuation is cut at a blank
  SegmentedText out;
  for (const Paragraph& p : Paragraphs(text)) {
    const std::string_view para = text.substr(p.begin, p.end - p.begin);
    if (IsHeading(para, p.lines)) {
      const size_t vb = DisplayBegin(text, p.begin, p.end, true, false);
      size_t ve = p.end;
      while (ve > vb && IsSpace(text[ve - 1])) --ve;
      Heading h;
      h.begin = static_cast<int64_t>(vb);
      h.end = static_cast<int64_t>(ve);
      AppendDisplay(text, vb, ve, false, false, &h.text);
      out.headings.push_back(std::move(h));
      continue;
    }
    size_t start = p.begin;
    size_t i = p.begin;
    while (i < p.end) {
      const char c = text[i];
      bool boundary = false;
      size_t after = i + 1;
      const bool ellipsis = i + 2 < p.end && static_cast<unsigned char>(c) == 0xE2 &&
                            static_cast<unsigned char>(text[i + 1]) == 0x80 &&
                            static_cast<unsigned char>(text[i + 2]) == 0xA6;  // U+2026
      if (c == '.' || c == '!' || c == '?' || ellipsis) {
        if (ellipsis) after = i + 3;
        while (after < p.end && (text[after] == '.' || text[after] == '!' || text[after] == '?'))
          ++after;
        while (after < p.end) {
          const size_t n = ClosingLength(text, after);
          if (n == 0) break;
          after += n;
        }
        boundary =
            (after >= p.end || IsSpace(text[after])) && !(c == '.' && IsAbbreviationDot(text, i));
      } else if (i - start >= kMaxSentenceBytes && IsSpace(c)) {
        boundary = true;
      }
      if (boundary) {
        AddSentence(text, start, after, &out);
        start = after;
        i = after;
      } else {
        ++i;
      }
    }
    if (start < p.end) AddSentence(text, start, p.end, &out);
  }
  return out;
}

}  // namespace muninn::tools
