// Private to tools/: the extractive steps of the summarizer (summarizer.h, steps 1–2): sections
// cut at headings, sentence salience from names, centrality, and MMR selection.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/retriever/embedder.h"
#include "muninn/tools/document_text.h"

namespace muninn::tools {

struct Section {
  int64_t begin = 0;  // byte span [begin, end)
  int64_t end = 0;
  size_t first_sentence = 0;  // sentences [first_sentence, last_sentence) of the SegmentedText
  size_t last_sentence = 0;
};

// `n_sections` spans covering the text, each cut placed at the heading nearest its ideal
// (equal-size) position when one lies within a third of a section of it, else at the nearest
// sentence start. Fewer sections come back when there are too few sentences.
std::vector<Section> CutSections(std::string_view text, const SegmentedText& seg,
                                 int64_t n_sections);

// "Genesis 1–4" from the headings inside [begin, end); `fallback` when there are none.
std::string SpanLabel(const std::vector<Heading>& headings, int64_t begin, int64_t end,
                      const std::string& fallback);

// Per source name (names.h SourceNames): log(1 + count) and the offset of its first occurrence.
// `top`: the `n_top` most frequent (TopSourceNames), the cast a brief summary should name.
struct NameWeights {
  std::unordered_map<std::string, double> weight;
  std::unordered_map<std::string, int64_t> first_offset;
  std::vector<std::string> top;
};
NameWeights ComputeNameWeights(std::string_view text, int64_t n_top = 20);

// The source names (those in `names.weight`) that `text` mentions, distinct, in order of first
// mention.
std::vector<std::string> MentionedNames(std::string_view text, const NameWeights& names);

// Name order (summary_eval.h ConcordantShare) of lines read one after the other, given each
// line's MentionedNames: each name's first mention vs its first occurrence in the source.
double NameOrder(const std::vector<const std::vector<std::string>*>& lines,
                 const NameWeights& names);

// Of the name pairs a line adds after a summary that already mentions names first met in the
// source at `seen` (byte offsets), the discordant share: pairs (earlier name, new name) where the
// new name was introduced by the source first, and pairs of new names out of order within the
// line. `line_names`: the line's MentionedNames; names in `seen_names` are not new. 0 when the
// line adds no pair.
double AddedDiscordance(const std::vector<int64_t>& seen,
                        const std::unordered_set<std::string>& seen_names,
                        const std::vector<std::string>& line_names, const NameWeights& names);

// Salience of a sentence inside the section [section_begin, section_end): the sum over its
// distinct names of their weight, doubled for a name the section introduces; 0 for sentences of
// fewer than 6 words, discounted for very long ones.
double Salience(const Sentence& s, const NameWeights& names, int64_t section_begin,
                int64_t section_end);

// L2-normalised vectors for `texts`: the embedder's when given, else hashed word counts.
StatusOr<std::vector<std::vector<float>>> SentenceVectors(const std::vector<std::string>& texts,
                                                          retriever::Embedder* embedder);

float Dot(const std::vector<float>& a, const std::vector<float>& b);

// Maximal marginal relevance: up to k indices of `scores`, each time the best of
// score - redundancy * (max similarity to those already taken). Returned in ascending order.
std::vector<size_t> SelectMmr(const std::vector<double>& scores,
                              const std::vector<std::vector<float>>& vectors, size_t k,
                              double redundancy = 0.5);

// `text` cut to at most `max_words` words at the last clause boundary (',', ';', ':') that keeps
// at least half of them, else at the word limit. Returns the kept byte length (of `text`).
size_t ClauseCut(std::string_view text, int64_t max_words);

}  // namespace muninn::tools
