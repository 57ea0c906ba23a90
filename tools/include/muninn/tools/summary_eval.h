// Reference-free measures of a summary against its source (`muninn eval summary`). No gold
// summary is needed: each measure checks something a reader would check by hand.
//
//  - name precision: of the names in the summary (names.h: capitalised words off a small stop
//    list, and numbers; every occurrence counts), the share that occur as words in the source.
//    An invented name ("Brigdeleph") counts against it.
//  - top-name coverage: the source's `top_names` most frequent source names (names.h: words the
//    source capitalises away from a sentence start more often than it writes them in lower
//    case, so neither "Wherefore" nor "Take" is one), and the share of them the summary mentions.
//  - thirds: each summary sentence of at least 3 words is *located* at the source sentence that
//    holds the largest share of its words (lower-cased), when that share is >= match_threshold;
//    a third of the source (by bytes) is represented when a located sentence starts in it.
//  - order: sentence order = the share of concordant pairs among located summary sentences
//    (summary order vs source position; pairs at one source position are skipped); name order =
//    the same over source names, by first mention in the summary vs first occurrence in the
//    source (other capitalised words, such as "Speak" or "Anxiety" opening a sentence, have no
//    place in the order the source introduces its names).
//    Both are (1 + Kendall tau) / 2: 1 is the source's order, 0.5 no relation, 0 reversed.
// Pure functions; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace muninn::tools {

struct SummaryEvalOptions {
  int64_t top_names = 20;
  double match_threshold = 0.5;
};

// What the summary is held to (docs/QUALITY.md, issue 16).
struct SummaryTargets {
  double name_precision = 0.95;
  double top_name_coverage = 0.5;
  double sentence_order = 0.9;
  double name_order = 0.75;
};

struct SummaryEval {
  int64_t names_total = 0;      // name occurrences in the summary
  int64_t names_supported = 0;  // ... that occur in the source
  double name_precision = 0.0;  // supported / total (1 when the summary has no names)
  std::vector<std::string> unsupported_names;  // distinct, in order of first mention

  std::vector<std::string> top_names;  // the source's most frequent names, most first
  std::vector<std::string> top_names_mentioned;
  double top_name_coverage = 0.0;

  int64_t sentences_total = 0;    // summary sentences of >= 3 words
  int64_t sentences_located = 0;  // ... matched to a source sentence
  std::array<int64_t, 3> located_per_third = {0, 0, 0};
  bool all_thirds = false;

  double sentence_order = 1.0;  // concordant share; 1 when there is no pair
  int64_t sentence_pairs = 0;
  double name_order = 1.0;
  int64_t name_pairs = 0;
};

// (1 + Kendall tau) / 2 of a sequence of source positions taken in summary order: the share of
// pairs (i < j) with source_pos[i] < source_pos[j], pairs tied in source_pos skipped; 1 when no
// pair is left. Sets *pairs to the number compared. The order measure above; the summarizer uses
// it to keep its brief in the order the source introduces its names.
double ConcordantShare(const std::vector<int64_t>& source_pos, int64_t* pairs);

SummaryEval EvaluateSummary(std::string_view source, std::string_view summary,
                            const SummaryEvalOptions& options = {});

// The targets `eval` misses, by name ("name_precision", "top_name_coverage", "thirds",
// "sentence_order", "name_order"); empty when all are met.
std::vector<std::string> MissedTargets(const SummaryEval& eval, const SummaryTargets& targets = {});

nlohmann::json ToJson(const SummaryEval& eval);

}  // namespace muninn::tools
