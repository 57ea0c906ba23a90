#include "unicode.h"

#include <algorithm>

#include "unicode_tables.h"

namespace muninn::model::unicode {

namespace ui = unicode_internal;

size_t SequenceLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 1;
}

namespace {

bool IsContinuation(uint8_t b) { return (b & 0xC0) == 0x80; }

// Allowed range of the second byte for a lead byte (excludes overlongs, surrogates, > U+10FFFF).
void SecondByteRange(uint8_t lead, uint8_t* lo, uint8_t* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (lead == 0xE0) *lo = 0xA0;
  if (lead == 0xED) *hi = 0x9F;
  if (lead == 0xF0) *lo = 0x90;
  if (lead == 0xF4) *hi = 0x8F;
}

}  // namespace

Utf8Unit DecodeOne(std::string_view text, size_t pos) {
  const auto* p = reinterpret_cast<const uint8_t*>(text.data()) + pos;
  const size_t avail = text.size() - pos;
  const uint8_t lead = p[0];
  const Utf8Unit invalid{kInvalidCodePoint, static_cast<uint32_t>(pos), 1};
  if (lead < 0x80) return {lead, static_cast<uint32_t>(pos), 1};
  const size_t len = SequenceLength(lead);
  if (len == 1 || avail < len) return invalid;
  uint8_t lo, hi;
  SecondByteRange(lead, &lo, &hi);
  if (p[1] < lo || p[1] > hi) return invalid;
  for (size_t i = 2; i < len; ++i) {
    if (!IsContinuation(p[i])) return invalid;
  }
  uint32_t cp;
  if (len == 2) {
    cp = (static_cast<uint32_t>(lead & 0x1F) << 6) | (p[1] & 0x3F);
  } else if (len == 3) {
    cp = (static_cast<uint32_t>(lead & 0x0F) << 12) | (static_cast<uint32_t>(p[1] & 0x3F) << 6) |
         (p[2] & 0x3F);
  } else {
    cp = (static_cast<uint32_t>(lead & 0x07) << 18) | (static_cast<uint32_t>(p[1] & 0x3F) << 12) |
         (static_cast<uint32_t>(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
  }
  return {cp, static_cast<uint32_t>(pos), static_cast<uint32_t>(len)};
}

std::vector<Utf8Unit> Decode(std::string_view text) {
  std::vector<Utf8Unit> out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    Utf8Unit u = DecodeOne(text, pos);
    out.push_back(u);
    pos += u.length;
  }
  return out;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string EncodeUtf8(uint32_t cp) {
  std::string s;
  AppendUtf8(cp, &s);
  return s;
}

bool IsValidUtf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    Utf8Unit u = DecodeOne(text, pos);
    if (u.cp == kInvalidCodePoint) return false;
    pos += u.length;
  }
  return true;
}

std::string SanitizeUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    Utf8Unit u = DecodeOne(text, pos);
    if (u.cp == kInvalidCodePoint) {
      AppendUtf8(kReplacementChar, &out);
    } else {
      out.append(text.substr(pos, u.length));
    }
    pos += u.length;
  }
  return out;
}

size_t CompletePrefixLength(std::string_view text) {
  // Only the last 3 bytes can start an unfinished sequence.
  const size_t n = text.size();
  const size_t start = n > 3 ? n - 3 : 0;
  for (size_t i = start; i < n; ++i) {
    const auto lead = static_cast<uint8_t>(text[i]);
    const size_t len = SequenceLength(lead);
    if (len == 1 || i + len <= n) continue;
    // Lead byte with too few bytes after it: incomplete only if what is there is a valid prefix.
    bool valid_prefix = true;
    if (i + 1 < n) {
      uint8_t lo, hi;
      SecondByteRange(lead, &lo, &hi);
      const auto b1 = static_cast<uint8_t>(text[i + 1]);
      valid_prefix = b1 >= lo && b1 <= hi;
      for (size_t j = i + 2; j < n && valid_prefix; ++j) {
        valid_prefix = IsContinuation(static_cast<uint8_t>(text[j]));
      }
    }
    if (valid_prefix) return i;
  }
  return n;
}

CategoryClass Category(uint32_t cp) {
  if (cp > 0x10FFFF) return CategoryClass::kUnassigned;
  const ui::CategoryRange* begin = ui::kCategoryRanges;
  const ui::CategoryRange* end = begin + ui::kCategoryRangesSize;
  const auto* it = std::upper_bound(
      begin, end, cp, [](uint32_t v, const ui::CategoryRange& r) { return v < r.first; });
  if (it == begin) return CategoryClass::kUnassigned;
  --it;
  if (cp > it->last) return CategoryClass::kUnassigned;
  return static_cast<CategoryClass>(it->cls);
}

bool IsWhitespace(uint32_t cp) {
  switch (cp) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

bool IsMarkNonspacing(uint32_t cp) {
  const ui::CodeRange* begin = ui::kMarkNonspacing;
  const ui::CodeRange* end = begin + ui::kMarkNonspacingSize;
  const auto* it = std::upper_bound(begin, end, cp,
                                    [](uint32_t v, const ui::CodeRange& r) { return v < r.first; });
  if (it == begin) return false;
  --it;
  return cp <= it->last;
}

namespace {

template <typename Mapping>
const Mapping* FindMapping(const Mapping* table, size_t size, uint32_t cp) {
  const Mapping* end = table + size;
  const Mapping* it =
      std::lower_bound(table, end, cp, [](const Mapping& m, uint32_t v) { return m.cp < v; });
  return (it != end && it->cp == cp) ? it : nullptr;
}

}  // namespace

void AppendLower(uint32_t cp, std::vector<uint32_t>* out) {
  if (cp < 0x80) {
    out->push_back(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
    return;
  }
  const auto* m = FindMapping(ui::kLowerMap, ui::kLowerMapSize, cp);
  if (m == nullptr) {
    out->push_back(cp);
    return;
  }
  for (uint32_t c : m->to) {
    if (c != 0) out->push_back(c);
  }
}

void AppendNfd(uint32_t cp, std::vector<uint32_t>* out) {
  // Hangul syllables decompose arithmetically (Unicode §3.12).
  constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
  constexpr uint32_t kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = 11172;
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out->push_back(kLBase + s / kNCount);
    out->push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out->push_back(kTBase + s % kTCount);
    return;
  }
  if (cp < 0xC0) {
    out->push_back(cp);
    return;
  }
  const auto* m = FindMapping(ui::kNfdMap, ui::kNfdMapSize, cp);
  if (m == nullptr) {
    out->push_back(cp);
    return;
  }
  for (uint32_t c : m->to) {
    if (c != 0) out->push_back(c);
  }
}

const char* TableVersion() { return ui::kUnicodeVersion; }

}  // namespace muninn::model::unicode
