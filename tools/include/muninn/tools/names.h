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
//    Numbers are skipped when looking back, so a verse number does not hide a sentence start;
//    the dot of a title or an initial ("Mr. Collins", IsAbbreviationDot) ends no sentence;
//  - a *source name* (SourceNames) is a name, not a number, that the source writes capitalised
//    away from a sentence start more often than it writes the word in lower case: "Wherefore"
//    (only ever opening a sentence) is not one, nor is "Take" (capitalised after "saying," 13
//    times in Exodus and Acts, "take" 64 times), "Collins" (always after "Mr." or "Mrs.") is.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
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

struct SourceName {
  int64_t count = 0;         // occurrences, sentence starts included
  int64_t mid_sentence = 0;  // occurrences away from a sentence start
  int64_t first_offset = 0;  // byte offset of the first occurrence
};

// The source names of `text` (the rule above). Shared by the summarizer's name weights and
// `muninn eval summary`'s top names and name order, so both count the same words.
std::unordered_map<std::string, SourceName> SourceNames(std::string_view text);

// The `n` most frequent of `names`, most first (ties: the earlier introduced first).
std::vector<std::string> TopSourceNames(const std::unordered_map<std::string, SourceName>& names,
                                        int64_t n);

// The words of `text` (letters only, as in the rule above), in order, unchanged in case.
std::vector<std::string_view> Words(std::string_view text);

// True for capitalised function words that are never counted as names ("The", "And", "He"...).
bool IsNameStopWord(std::string_view word);

// ASCII lower case of `word` (other bytes unchanged).
std::string LowerAscii(std::string_view word);

}  // namespace muninn::tools
