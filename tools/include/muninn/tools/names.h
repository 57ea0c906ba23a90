// Names in text: the words a reader can check against a source. Shared by the summarizer (which
// rejects a generated sentence whose names are not in what it condensed) and `muninn eval
// summary` (name precision, coverage and order).
//
// The rule, in one place:
//  - a *word* is a maximal run of letters: ASCII letters and any byte >= 0x80 (so UTF-8 letters
//    stay inside words); an apostrophe ends a word ("Joseph's" gives "Joseph" and "s");
//  - a *number* is a maximal run of ASCII digits;
//  - a *name* is a word whose first byte is an ASCII capital, that is longer than one letter and
//    is not on the stop list (IsNameStopWord: capitalised function words such as "The", "And",
//    "He", "Then", "Behold"), or a number. Names compare case-sensitively ("LORD" ≠ "Lord");
//  - a *sentence start* is the first word of the text or a word whose nearest preceding
//    non-space, non-digit, non-quote byte is '.', '!' or '?', or that follows a blank line.
//    Numbers are skipped when looking back, so a verse number does not hide a sentence start.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace muninn::tools {

struct NameOccurrence {
  std::string name;
  int64_t offset = 0;           // byte offset in the text
  bool sentence_start = false;  // first word of a sentence (see the rule above)
  bool number = false;
};

// Every name in `text`, in order.
std::vector<NameOccurrence> FindNames(std::string_view text);

// The words of `text` (letters only, as in the rule above), in order, unchanged in case.
std::vector<std::string_view> Words(std::string_view text);

// True for capitalised function words that are never counted as names ("The", "And", "He"...).
bool IsNameStopWord(std::string_view word);

// ASCII lower case of `word` (other bytes unchanged).
std::string LowerAscii(std::string_view word);

}  // namespace muninn::tools
