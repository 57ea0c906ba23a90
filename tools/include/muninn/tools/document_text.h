// Document text as the summarizer and `muninn eval summary` read it: checked (not empty, not
// binary, not oversized), then cut into sentences and headings that keep their byte spans in the
// source, so every line of a summary can point back to where it came from.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/status.h"

namespace muninn::tools {

// 16 MiB: the whole King James Bible (4.3 MB) fits; a larger file is far more likely a mistake
// (a disk image, a log) than a book. Raised with --max-bytes.
inline constexpr int64_t kDefaultMaxDocumentBytes = int64_t{16} << 20;

// InvalidArgument, with what to do, when `text` is empty or whitespace only, holds a NUL byte or
// is mostly not UTF-8 (more than 5 % of its bytes in invalid sequences), or is longer than
// `max_bytes`. Text with a few invalid bytes passes (they are read as replacement characters).
Status CheckDocumentText(std::string_view text, int64_t max_bytes = kDefaultMaxDocumentBytes);

// Share of the bytes of `text` that are not part of a valid UTF-8 sequence.
double InvalidUtf8Fraction(std::string_view text);

struct Sentence {
  int64_t begin = 0;  // byte span [begin, end) in the source
  int64_t end = 0;
  std::string text;  // whitespace collapsed; verse/line numbers that open an indented line dropped
  int64_t n_words = 0;
};

// A paragraph of one short line without sentence punctuation ("Genesis 1", "CHAPTER IV").
struct Heading {
  int64_t begin = 0;
  int64_t end = 0;
  std::string text;
};

struct SegmentedText {
  std::vector<Sentence> sentences;  // in order, non-overlapping, headings excluded
  std::vector<Heading> headings;    // in order
};

// Cuts `text` into sentences: a sentence ends after '.', '!', '?' or '…' (and any closing quotes or
// brackets) followed by white space, except after a known abbreviation ("Mr.", "St.") or a single
// capital initial, and at every paragraph break (a blank line). Headings are set apart.
SegmentedText SegmentText(std::string_view text);

// True when the '.' at text[dot] ends a known abbreviation ("Mr", "St", "Col"...) or a single
// capital initial, so it ends no sentence (the rule SegmentText and FindNames share).
bool IsAbbreviationDot(std::string_view text, size_t dot);

}  // namespace muninn::tools
