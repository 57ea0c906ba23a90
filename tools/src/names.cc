#include "muninn/tools/names.h"

#include <algorithm>
#include <array>

#include "muninn/tools/document_text.h"

namespace muninn::tools {
namespace {

bool IsLetter(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}
bool IsDigit(unsigned char c) { return c >= '0' && c <= '9'; }

// UTF-8 General Punctuation (U+2000–U+206F: curly quotes, dashes, ellipsis) is three bytes
// E2 80..81 xx; those bytes are >= 0x80 but are not letters.
bool IsUnicodePunct(std::string_view text, size_t i) {
  return i + 2 < text.size() && static_cast<unsigned char>(text[i]) == 0xE2 &&
         (static_cast<unsigned char>(text[i + 1]) == 0x80 ||
          static_cast<unsigned char>(text[i + 1]) == 0x81);
}

bool LetterAt(std::string_view text, size_t i) {
  return IsLetter(static_cast<unsigned char>(text[i])) && !IsUnicodePunct(text, i);
}

// Sorted, so that lookups are a binary search. Capitalised function words, pronouns and the
// words a sentence or a quotation commonly opens with, and titles ("Mr", "Sir"): none is a
// name in any text we read.
constexpr std::array<std::string_view, 137> kStopWords = {
    "About",     "After",   "Again",  "Against", "Ah",     "All",   "Also",   "Although",
    "Am",        "An",      "And",    "Another", "Any",    "Are",   "As",     "At",
    "Be",        "Because", "Been",   "Before",  "Behold", "Being", "Both",   "But",
    "By",        "Can",     "Come",   "Could",   "Did",    "Do",    "Does",   "Dr",
    "Each",      "Even",    "Every",  "For",     "From",   "Go",    "Had",    "Has",
    "Have",      "He",      "Hence",  "Her",     "Here",   "Hers",  "Him",    "His",
    "How",       "However", "If",     "In",      "Into",   "Is",    "It",     "Its",
    "Let",       "May",     "Me",     "Might",   "Mine",   "Miss",  "More",   "Most",
    "Mr",        "Mrs",     "Ms",     "Much",    "Must",   "My",    "Nay",    "Neither",
    "No",        "Nor",     "Not",    "Now",     "Of",     "Oh",    "On",     "Once",
    "One",       "Only",    "Or",     "Other",   "Our",    "Out",   "Over",   "Say",
    "Shall",     "She",     "Should", "Sir",     "So",     "Some",  "St",     "Such",
    "Than",      "That",    "The",    "Thee",    "Their",  "Them",  "Then",   "There",
    "Therefore", "These",   "They",   "This",    "Those",  "Thou",  "Though", "Thus",
    "Thy",       "To",      "Unto",   "Upon",    "Us",     "Was",   "We",     "Were",
    "What",      "When",    "Where",  "Which",   "While",  "Who",   "Whom",   "Why",
    "Will",      "With",    "Would",  "Ye",      "Yea",    "Yes",   "Yet",    "You",
    "Your"};

}  // namespace

bool IsNameStopWord(std::string_view word) {
  return std::binary_search(kStopWords.begin(), kStopWords.end(), word);
}

std::string LowerAscii(std::string_view word) {
  std::string s(word);
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

std::vector<std::string_view> Words(std::string_view text) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < text.size()) {
    if (!LetterAt(text, i)) {
      i += IsUnicodePunct(text, i) ? 3 : 1;
      continue;
    }
    size_t j = i;
    while (j < text.size() && LetterAt(text, j)) ++j;
    out.push_back(text.substr(i, j - i));
    i = j;
  }
  return out;
}

std::vector<NameOccurrence> FindNames(std::string_view text) {
  std::vector<NameOccurrence> out;
  bool at_start = true;  // the next word starts a sentence
  int newlines = 0;      // newlines since the last word or punctuation (2 = a blank line)
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (IsUnicodePunct(text, i)) {
      // Curly quotes (U+2018..U+201F) are transparent; dashes and the rest end a sentence start.
      const unsigned char c2 = static_cast<unsigned char>(text[i + 2]);
      if (!(static_cast<unsigned char>(text[i + 1]) == 0x80 && c2 >= 0x98 && c2 <= 0x9F)) {
        at_start = c2 == 0xA6;  // an ellipsis ends a sentence
        newlines = 0;
      }
      i += 3;
      continue;
    }
    if (LetterAt(text, i) || IsDigit(c)) {
      const bool digits = IsDigit(c);
      size_t j = i;
      while (j < text.size() &&
             (digits ? IsDigit(static_cast<unsigned char>(text[j])) : LetterAt(text, j))) {
        ++j;
      }
      const std::string_view w = text.substr(i, j - i);
      const bool start = at_start || newlines >= 2;
      if (digits) {
        out.push_back({std::string(w), static_cast<int64_t>(i), start, true});
        // A number does not end the look-back: "5 And" after "day." still starts a sentence.
      } else {
        if (c >= 'A' && c <= 'Z' && w.size() > 1 && !IsNameStopWord(w)) {
          out.push_back({std::string(w), static_cast<int64_t>(i), start, false});
        }
        at_start = false;
        newlines = 0;
      }
      i = j;
      continue;
    }
    if (c == '.' || c == '!' || c == '?') {
      // "Mr. Collins": the dot of a title or an initial ends no sentence (SegmentText's rule).
      at_start = !(c == '.' && IsAbbreviationDot(text, i));
      newlines = 0;
    } else if (c == '\n') {
      ++newlines;
    } else if (c == ' ' || c == '\t' || c == '\r' || c == '"' || c == '\'' || c == '(' ||
               c == ')' || c == '[' || c == ']') {
      // transparent
    } else {
      at_start = false;
      newlines = 0;
    }
    ++i;
  }
  return out;
}

std::unordered_map<std::string, SourceName> SourceNames(std::string_view text) {
  std::unordered_map<std::string, SourceName> all;
  for (const NameOccurrence& n : FindNames(text)) {
    if (n.number) continue;
    auto [it, inserted] = all.try_emplace(n.name);
    if (inserted) it->second.first_offset = n.offset;
    ++it->second.count;
    if (!n.sentence_start) ++it->second.mid_sentence;
  }
  std::unordered_map<std::string, int64_t> lower;  // words written in lower case
  for (std::string_view w : Words(text)) {
    if (w[0] >= 'a' && w[0] <= 'z') ++lower[std::string(w)];
  }
  std::unordered_map<std::string, SourceName> out;
  for (auto& [name, s] : all) {
    const auto it = lower.find(LowerAscii(name));
    const int64_t n_lower = it == lower.end() ? 0 : it->second;
    if (s.mid_sentence > n_lower) out.emplace(name, s);
  }
  return out;
}

std::vector<std::string> TopSourceNames(const std::unordered_map<std::string, SourceName>& names,
                                        int64_t n) {
  std::vector<std::pair<std::string, SourceName>> ranked(names.begin(), names.end());
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    return a.second.count != b.second.count ? a.second.count > b.second.count
                                            : a.second.first_offset < b.second.first_offset;
  });
  std::vector<std::string> out;
  for (size_t i = 0; i < ranked.size() && static_cast<int64_t>(i) < n; ++i) {
    out.push_back(ranked[i].first);
  }
  return out;
}

}  // namespace muninn::tools
