// UTF-8 and Unicode-property helpers shared by the tokenizers (private to muninn_model).
//
// Everything here is total: any byte sequence is accepted. Invalid UTF-8 is decoded one byte at a
// time as kInvalidCodePoint-tagged units so callers can either replace it (U+FFFD) or keep the raw
// byte (byte-level BPE). Pure functions, thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace muninn::model::unicode {

// Marks a byte that is not part of a valid UTF-8 sequence.
inline constexpr uint32_t kInvalidCodePoint = 0xFFFFFFFFu;
inline constexpr uint32_t kReplacementChar = 0xFFFD;

// One decoded unit: a code point (or kInvalidCodePoint) and the bytes it came from.
struct Utf8Unit {
  uint32_t cp;
  uint32_t offset;  // byte offset in the input
  uint32_t length;  // 1..4 bytes
};

// Decodes the UTF-8 sequence at text[pos]; an invalid or truncated sequence, an overlong form, a
// surrogate or a value past U+10FFFF yields {kInvalidCodePoint, pos, 1}.
Utf8Unit DecodeOne(std::string_view text, size_t pos);

// Decodes all of `text`; the units tile the input exactly.
std::vector<Utf8Unit> Decode(std::string_view text);

// Appends the UTF-8 encoding of `cp` (must be <= U+10FFFF, not a surrogate) to `out`.
void AppendUtf8(uint32_t cp, std::string* out);
std::string EncodeUtf8(uint32_t cp);

// Length of a UTF-8 sequence from its lead byte (1 for continuation or invalid lead bytes).
size_t SequenceLength(uint8_t lead);

// True when `text` is entirely valid UTF-8.
bool IsValidUtf8(std::string_view text);

// Replaces every invalid byte with U+FFFD.
std::string SanitizeUtf8(std::string_view text);

// Length of the longest prefix of `text` that does not end inside an incomplete (but so far
// valid) multi-byte sequence. Bytes that can never become valid are counted as complete.
size_t CompletePrefixLength(std::string_view text);

enum class CategoryClass : uint8_t {
  kUnassigned = 0,
  kLetter = 1,
  kNumber = 2,
  kMark = 3,
  kPunctuation = 4,
  kSymbol = 5,
  kSeparator = 6,
  kOther = 7,
};

// Coarse general category (first letter of the two-letter category). Invalid → kUnassigned.
CategoryClass Category(uint32_t cp);
inline bool IsLetter(uint32_t cp) { return Category(cp) == CategoryClass::kLetter; }
inline bool IsNumber(uint32_t cp) { return Category(cp) == CategoryClass::kNumber; }
// Unicode White_Space property (what regex \s means in Oniguruma / Rust regex / PCRE2 with UCP).
bool IsWhitespace(uint32_t cp);
// General category Mn.
bool IsMarkNonspacing(uint32_t cp);
// Appends the full lowercase mapping of `cp`.
void AppendLower(uint32_t cp, std::vector<uint32_t>* out);
// Appends the full canonical decomposition (NFD) of `cp`, Hangul syllables included.
void AppendNfd(uint32_t cp, std::vector<uint32_t>* out);

// Unicode version of the generated tables.
const char* TableVersion();

}  // namespace muninn::model::unicode
