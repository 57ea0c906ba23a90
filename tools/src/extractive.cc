#include "extractive.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <unordered_set>

#include "muninn/tools/names.h"
#include "muninn/tools/summary_eval.h"

namespace muninn::tools {

std::vector<Section> CutSections(std::string_view text, const SegmentedText& seg,
                                 int64_t n_sections) {
  const int64_t len = static_cast<int64_t>(text.size());
  const int64_t n = std::max<int64_t>(
      1, std::min<int64_t>(n_sections, static_cast<int64_t>(seg.sentences.size())));
  const double section_bytes = static_cast<double>(len) / static_cast<double>(n);
  std::vector<int64_t> cuts = {0};
  for (int64_t i = 1; i < n; ++i) {
    const double target = section_bytes * static_cast<double>(i);
    int64_t best = -1;
    double best_d = section_bytes / 3.0;
    for (const Heading& h : seg.headings) {
      const double d = std::abs(static_cast<double>(h.begin) - target);
      if (d <= best_d && h.begin > cuts.back()) {
        best_d = d;
        best = h.begin;
      }
    }
    if (best < 0) {
      best_d = 1e300;
      for (const Sentence& s : seg.sentences) {
        const double d = std::abs(static_cast<double>(s.begin) - target);
        if (d < best_d && s.begin > cuts.back()) {
          best_d = d;
          best = s.begin;
        }
      }
    }
    if (best > cuts.back()) cuts.push_back(best);
  }
  cuts.push_back(len);
  std::vector<Section> out;
  size_t si = 0;
  for (size_t c = 0; c + 1 < cuts.size(); ++c) {
    Section s;
    s.begin = cuts[c];
    s.end = cuts[c + 1];
    s.first_sentence = si;
    while (si < seg.sentences.size() && seg.sentences[si].begin < s.end) ++si;
    s.last_sentence = si;
    if (s.last_sentence == s.first_sentence) {
      // No sentence here (headings only): the span joins the previous section, or the next.
      if (!out.empty()) {
        out.back().end = s.end;
      } else if (c + 2 < cuts.size()) {
        cuts[c + 1] = s.begin;
      }
      continue;
    }
    out.push_back(s);
  }
  if (!out.empty()) out.back().end = len;
  return out;
}

std::string SpanLabel(const std::vector<Heading>& headings, int64_t begin, int64_t end,
                      const std::string& fallback) {
  const Heading* before = nullptr;  // the heading in force where the span starts
  const Heading* first = nullptr;
  const Heading* last = nullptr;
  for (const Heading& h : headings) {
    if (h.begin < begin) before = &h;
    if (h.begin < begin || h.begin >= end) continue;
    if (first == nullptr) first = &h;
    last = &h;
  }
  if (first == nullptr) return before != nullptr ? before->text + " (continued)" : fallback;
  // Text before the first heading inside belongs to the one in force before it.
  if (before != nullptr && first->begin > begin) {
    const bool prose_before = first->begin - begin > 200;
    if (prose_before) first = before;
  }
  if (first == last) return first->text;
  // "Genesis 1" .. "Genesis 4" -> "Genesis 1–4".
  const size_t a = first->text.rfind(' ');
  const size_t b = last->text.rfind(' ');
  if (a != std::string::npos && a == b && first->text.compare(0, a, last->text, 0, b) == 0) {
    return first->text + "\u2013" + last->text.substr(b + 1);
  }
  return first->text + " \u2013 " + last->text;
}

NameWeights ComputeNameWeights(std::string_view text, int64_t n_top) {
  NameWeights w;
  const std::unordered_map<std::string, SourceName> names = SourceNames(text);
  for (const auto& [name, s] : names) {
    w.weight[name] = std::log1p(static_cast<double>(s.count));
    w.first_offset[name] = s.first_offset;
  }
  w.top = TopSourceNames(names, n_top);
  return w;
}

std::vector<std::string> MentionedNames(std::string_view text, const NameWeights& names) {
  std::vector<std::string> out;
  std::unordered_set<std::string> seen;
  for (const NameOccurrence& n : FindNames(text)) {
    if (!n.number && names.weight.count(n.name) && seen.insert(n.name).second) {
      out.push_back(n.name);
    }
  }
  return out;
}

double NameOrder(const std::vector<const std::vector<std::string>*>& lines,
                 const NameWeights& names) {
  std::unordered_set<std::string> seen;
  std::vector<int64_t> first;
  for (const std::vector<std::string>* l : lines) {
    for (const std::string& n : *l) {
      if (seen.insert(n).second) first.push_back(names.first_offset.at(n));
    }
  }
  int64_t pairs = 0;
  return ConcordantShare(first, &pairs);
}

double AddedDiscordance(const std::vector<int64_t>& seen,
                        const std::unordered_set<std::string>& seen_names,
                        const std::vector<std::string>& line_names, const NameWeights& names) {
  std::vector<int64_t> fresh;
  for (const std::string& n : line_names) {
    if (!seen_names.count(n)) fresh.push_back(names.first_offset.at(n));
  }
  int64_t pairs = 0;
  int64_t discordant = 0;
  for (size_t i = 0; i < fresh.size(); ++i) {
    for (int64_t s : seen) {
      if (s == fresh[i]) continue;
      ++pairs;
      if (fresh[i] < s) ++discordant;
    }
    for (size_t j = i + 1; j < fresh.size(); ++j) {
      if (fresh[i] == fresh[j]) continue;
      ++pairs;
      if (fresh[j] < fresh[i]) ++discordant;
    }
  }
  return pairs == 0 ? 0.0 : static_cast<double>(discordant) / static_cast<double>(pairs);
}

double Salience(const Sentence& s, const NameWeights& names, int64_t section_begin,
                int64_t section_end) {
  if (s.n_words < 6) return 0.0;
  std::unordered_set<std::string> seen;
  std::vector<double> w;
  for (const NameOccurrence& n : FindNames(s.text)) {
    if (n.number || !seen.insert(n.name).second) continue;
    auto it = names.weight.find(n.name);
    if (it == names.weight.end()) continue;
    const int64_t first = names.first_offset.at(n.name);
    // A recurring name (3+ mentions) that this section introduces marks an event worth a line.
    const bool introduced =
        first >= section_begin && first < section_end && it->second >= std::log1p(3.0);
    w.push_back(it->second * (introduced ? 2.0 : 1.0));
  }
  // Only the three heaviest names count, so a list of names (a genealogy) does not outweigh a
  // sentence about the main characters.
  std::sort(w.begin(), w.end(), std::greater<>());
  double sum = 0.0;
  for (size_t i = 0; i < w.size() && i < 3; ++i) sum += w[i];
  if (s.n_words > 60) sum *= 60.0 / static_cast<double>(s.n_words);
  return sum;
}

StatusOr<std::vector<std::vector<float>>> SentenceVectors(const std::vector<std::string>& texts,
                                                          retriever::Embedder* embedder) {
  std::vector<std::vector<float>> out;
  if (texts.empty()) return out;
  if (embedder != nullptr) {
    std::vector<retriever::EmbedRequest> req;
    req.reserve(texts.size());
    for (const std::string& t : texts) req.push_back({t, {}});
    ASSIGN_OR_RETURN(std::vector<float> flat, embedder->Embed(req));
    const size_t dim = static_cast<size_t>(embedder->dim());
    for (size_t i = 0; i < texts.size(); ++i) {
      out.emplace_back(flat.begin() + static_cast<std::ptrdiff_t>(i * dim),
                       flat.begin() + static_cast<std::ptrdiff_t>((i + 1) * dim));
    }
    return out;
  }
  constexpr size_t kDim = 1024;
  for (const std::string& t : texts) {
    std::vector<float> v(kDim, 0.0f);
    for (std::string_view w : Words(t)) {
      if (w.size() < 3) continue;
      v[std::hash<std::string>{}(LowerAscii(w)) % kDim] += 1.0f;
    }
    double norm = 0.0;
    for (float x : v) norm += static_cast<double>(x) * x;
    if (norm > 0.0) {
      for (float& x : v) x = static_cast<float>(x / std::sqrt(norm));
    }
    out.push_back(std::move(v));
  }
  return out;
}

float Dot(const std::vector<float>& a, const std::vector<float>& b) {
  float s = 0.0f;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) s += a[i] * b[i];
  return s;
}

std::vector<size_t> SelectMmr(const std::vector<double>& scores,
                              const std::vector<std::vector<float>>& vectors, size_t k,
                              double redundancy) {
  std::vector<size_t> taken;
  std::vector<bool> used(scores.size(), false);
  while (taken.size() < k && taken.size() < scores.size()) {
    size_t best = scores.size();
    double best_v = -1e300;
    for (size_t i = 0; i < scores.size(); ++i) {
      if (used[i]) continue;
      double sim = 0.0;
      for (size_t t : taken) sim = std::max(sim, static_cast<double>(Dot(vectors[i], vectors[t])));
      const double v = scores[i] - redundancy * sim;
      if (v > best_v) {
        best_v = v;
        best = i;
      }
    }
    used[best] = true;
    taken.push_back(best);
  }
  std::sort(taken.begin(), taken.end());
  return taken;
}

size_t ClauseCut(std::string_view text, int64_t max_words) {
  int64_t words = 0;
  bool in_word = false;
  size_t limit = text.size();  // byte where word max_words + 1 starts
  size_t last_clause = 0;      // byte of the last clause mark within the limit
  int64_t words_at_clause = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || static_cast<unsigned char>(c) >= 0x80 ||
                        c == '\'';
    if (letter && !in_word) {
      if (++words > max_words) {
        limit = i;
        break;
      }
    }
    in_word = letter;
    if (c == ',' || c == ';' || c == ':') {
      last_clause = i;
      words_at_clause = words;
    }
  }
  if (limit == text.size()) return text.size();
  size_t cut = (last_clause > 0 && words_at_clause * 2 >= max_words) ? last_clause : limit;
  while (cut > 0 && (text[cut - 1] == ' ' || text[cut - 1] == ',' || text[cut - 1] == ';' ||
                     text[cut - 1] == ':')) {
    --cut;
  }
  return cut;
}

}  // namespace muninn::tools
