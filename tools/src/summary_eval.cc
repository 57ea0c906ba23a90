#include "muninn/tools/summary_eval.h"

#include <algorithm>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "muninn/tools/document_text.h"
#include "muninn/tools/names.h"

namespace muninn::tools {

double ConcordantShare(const std::vector<int64_t>& source_pos, int64_t* pairs) {
  int64_t concordant = 0;
  int64_t total = 0;
  for (size_t i = 0; i < source_pos.size(); ++i) {
    for (size_t j = i + 1; j < source_pos.size(); ++j) {
      if (source_pos[i] == source_pos[j]) continue;
      ++total;
      if (source_pos[i] < source_pos[j]) ++concordant;
    }
  }
  *pairs = total;
  return total == 0 ? 1.0 : static_cast<double>(concordant) / static_cast<double>(total);
}

SummaryEval EvaluateSummary(std::string_view source, std::string_view summary,
                            const SummaryEvalOptions& options) {
  SummaryEval r;
  // ---- the source's words and names ----
  std::unordered_set<std::string> source_tokens;  // every word and number, case kept
  for (const NameOccurrence& n : FindNames(source)) source_tokens.insert(n.name);
  for (std::string_view w : Words(source)) source_tokens.emplace(w);
  const std::unordered_map<std::string, SourceName> stats = SourceNames(source);
  r.top_names = TopSourceNames(stats, options.top_names);

  // ---- name precision and coverage ----
  const std::vector<NameOccurrence> summary_names = FindNames(summary);
  std::set<std::string> seen_unsupported;
  std::vector<int64_t> name_first_source;  // by first mention in the summary
  std::set<std::string> mentioned;
  for (const NameOccurrence& n : summary_names) {
    ++r.names_total;
    if (source_tokens.count(n.name)) {
      ++r.names_supported;
    } else if (seen_unsupported.insert(n.name).second) {
      r.unsupported_names.push_back(n.name);
    }
    if (!n.number && mentioned.insert(n.name).second) {
      if (auto it = stats.find(n.name); it != stats.end())
        name_first_source.push_back(it->second.first_offset);
    }
  }
  r.name_precision = r.names_total == 0 ? 1.0
                                        : static_cast<double>(r.names_supported) /
                                              static_cast<double>(r.names_total);
  std::unordered_set<std::string> summary_words;
  for (std::string_view w : Words(summary)) summary_words.emplace(w);
  for (const std::string& n : r.top_names) {
    if (summary_words.count(n)) r.top_names_mentioned.push_back(n);
  }
  r.top_name_coverage = r.top_names.empty() ? 0.0
                                            : static_cast<double>(r.top_names_mentioned.size()) /
                                                  static_cast<double>(r.top_names.size());
  r.name_order = ConcordantShare(name_first_source, &r.name_pairs);

  // ---- locating summary sentences in the source ----
  const SegmentedText src = SegmentText(source);
  std::unordered_map<std::string, std::vector<int32_t>> index;  // word -> source sentences
  for (size_t s = 0; s < src.sentences.size(); ++s) {
    std::unordered_set<std::string> ws;
    for (std::string_view w : Words(src.sentences[s].text)) ws.insert(LowerAscii(w));
    for (const std::string& w : ws) index[w].push_back(static_cast<int32_t>(s));
  }
  std::vector<int64_t> located;
  std::vector<int32_t> hits(src.sentences.size(), 0);
  const double n_bytes = static_cast<double>(std::max<size_t>(source.size(), 1));
  for (const Sentence& s : SegmentText(summary).sentences) {
    std::unordered_set<std::string> ws;
    for (std::string_view w : Words(s.text)) ws.insert(LowerAscii(w));
    if (ws.size() < 3) continue;
    ++r.sentences_total;
    std::fill(hits.begin(), hits.end(), 0);
    int32_t best = -1;
    int32_t best_hits = 0;
    for (const std::string& w : ws) {
      auto it = index.find(w);
      if (it == index.end()) continue;
      for (int32_t k : it->second) {
        if (++hits[static_cast<size_t>(k)] > best_hits ||
            (hits[static_cast<size_t>(k)] == best_hits && k < best)) {
          best_hits = hits[static_cast<size_t>(k)];
          best = k;
        }
      }
    }
    if (best < 0 ||
        static_cast<double>(best_hits) < options.match_threshold * static_cast<double>(ws.size())) {
      continue;
    }
    ++r.sentences_located;
    const int64_t pos = src.sentences[static_cast<size_t>(best)].begin;
    located.push_back(pos);
    const int third = std::min(2, static_cast<int>(3.0 * static_cast<double>(pos) / n_bytes));
    ++r.located_per_third[static_cast<size_t>(third)];
  }
  r.all_thirds =
      r.located_per_third[0] > 0 && r.located_per_third[1] > 0 && r.located_per_third[2] > 0;
  r.sentence_order = ConcordantShare(located, &r.sentence_pairs);
  return r;
}

std::vector<std::string> MissedTargets(const SummaryEval& e, const SummaryTargets& t) {
  std::vector<std::string> missed;
  if (e.name_precision < t.name_precision) missed.emplace_back("name_precision");
  if (e.top_name_coverage < t.top_name_coverage) missed.emplace_back("top_name_coverage");
  if (!e.all_thirds) missed.emplace_back("thirds");
  if (e.sentence_order < t.sentence_order) missed.emplace_back("sentence_order");
  if (e.name_order < t.name_order) missed.emplace_back("name_order");
  return missed;
}

nlohmann::json ToJson(const SummaryEval& e) {
  return {{"name_precision", e.name_precision},
          {"names_total", e.names_total},
          {"names_supported", e.names_supported},
          {"unsupported_names", e.unsupported_names},
          {"top_names", e.top_names},
          {"top_names_mentioned", e.top_names_mentioned},
          {"top_name_coverage", e.top_name_coverage},
          {"sentences_total", e.sentences_total},
          {"sentences_located", e.sentences_located},
          {"located_per_third", e.located_per_third},
          {"all_thirds", e.all_thirds},
          {"sentence_order", e.sentence_order},
          {"sentence_pairs", e.sentence_pairs},
          {"name_order", e.name_order},
          {"name_pairs", e.name_pairs}};
}

}  // namespace muninn::tools
