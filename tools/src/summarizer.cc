#include "muninn/tools/summarizer.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <set>
#include <unordered_set>

#include "extractive.h"
#include "muninn/tools/names.h"

namespace muninn::tools {

Status SummarizerOptions::Validate() const {
  if (section_tokens < 16) return InvalidArgumentError("section_tokens must be at least 16");
  if (min_sections < 1) return InvalidArgumentError("min_sections must be >= 1");
  if (sentences_per_section < 1) return InvalidArgumentError("sentences_per_section must be >= 1");
  if (merge_fanout < 2) return InvalidArgumentError("merge_fanout must be >= 2");
  if (merge_keep < 1) return InvalidArgumentError("merge_keep must be >= 1");
  if (brief_sentences < 1) return InvalidArgumentError("brief_sentences must be >= 1");
  if (max_tokens < 1) return InvalidArgumentError("max_tokens must be >= 1");
  if (max_sentence_words < 8) return InvalidArgumentError("max_sentence_words must be >= 8");
  if (candidates_per_section < 1)
    return InvalidArgumentError("candidates_per_section must be >= 1");
  if (!(order_weight >= 0.0)) return InvalidArgumentError("order_weight must be >= 0");
  if (!(cover_weight >= 0.0)) return InvalidArgumentError("cover_weight must be >= 0");
  if (cover_top_names < 0) return InvalidArgumentError("cover_top_names must be >= 0");
  if (condense_tokens < 1) return InvalidArgumentError("condense_tokens must be >= 1");
  if (max_input_bytes < 1) return InvalidArgumentError("max_input_bytes must be >= 1");
  return sampling.Validate();
}

bool IsFaithfulCondensation(std::string_view source, std::string_view candidate) {
  const std::vector<std::string_view> cw = Words(candidate);
  const std::vector<std::string_view> sw = Words(source);
  if (cw.size() < 6 || cw.size() >= sw.size()) return false;
  std::unordered_set<std::string> source_tokens;
  for (const NameOccurrence& n : FindNames(source)) source_tokens.insert(n.name);
  for (std::string_view w : sw) source_tokens.emplace(w);
  for (const NameOccurrence& n : FindNames(candidate)) {
    if (!source_tokens.count(n.name)) return false;  // an invented name or number
  }
  // Align the words (lower case) by longest common subsequence: the candidate must be the source
  // with words left out — >= 90 % of its words matched in order — and with at most one cut
  // inside the kept part, that cut a whole clause (see clause_break).
  std::vector<std::string> c(cw.size());
  std::vector<std::string> t(sw.size());
  for (size_t i = 0; i < cw.size(); ++i) c[i] = LowerAscii(cw[i]);
  for (size_t j = 0; j < sw.size(); ++j) t[j] = LowerAscii(sw[j]);
  const size_t n = c.size();
  const size_t m = t.size();
  // (candidate word, source word) pairs of one LCS, matching each word as early as it can.
  const auto align = [](const std::vector<std::string>& x, const std::vector<std::string>& y) {
    std::vector<std::vector<int32_t>> lcs(x.size() + 1, std::vector<int32_t>(y.size() + 1, 0));
    for (size_t i = x.size(); i-- > 0;) {
      for (size_t j = y.size(); j-- > 0;) {
        lcs[i][j] = x[i] == y[j] ? lcs[i + 1][j + 1] + 1 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
      }
    }
    std::vector<std::pair<size_t, size_t>> pairs;
    for (size_t i = 0, j = 0; i < x.size() && j < y.size();) {
      if (x[i] == y[j] && lcs[i][j] == lcs[i + 1][j + 1] + 1) {
        pairs.emplace_back(i++, j++);
      } else if (lcs[i + 1][j] >= lcs[i][j + 1]) {
        ++i;
      } else {
        ++j;
      }
    }
    return pairs;
  };
  std::vector<std::pair<size_t, size_t>> early = align(c, t);
  if (static_cast<double>(early.size()) < 0.9 * static_cast<double>(n)) return false;
  // The same on the reversed words: each word matched as late as it can. Common words ("and")
  // can be matched in several places; the candidate passes when either alignment does.
  std::vector<std::string> rc(c.rbegin(), c.rend());
  std::vector<std::string> rt(t.rbegin(), t.rend());
  std::vector<std::pair<size_t, size_t>> late = align(rc, rt);
  for (auto& [i, j] : late) {
    i = n - 1 - i;
    j = m - 1 - j;
  }
  std::reverse(late.begin(), late.end());
  // Whether a clause mark separates source words j and j + 1.
  const auto clause_break = [&](size_t j) {
    const size_t from = static_cast<size_t>(sw[j].data() - source.data()) + sw[j].size();
    const size_t to = static_cast<size_t>(sw[j + 1].data() - source.data());
    const std::string_view between = source.substr(from, to - from);
    return between.find_first_of(",;:.!?") != std::string_view::npos;
  };
  // Source words dropped between two kept ones: only a whole clause may go, so that the words on
  // either side were neighbours across clause marks ("healed Abimelech, and his wife" must not
  // become "healed his wife"); and only once.
  const auto cuts_ok = [&](const std::vector<std::pair<size_t, size_t>>& pairs) {
    int cuts = 0;
    for (size_t k = 1; k < pairs.size(); ++k) {
      const size_t a = pairs[k - 1].second;
      const size_t b = pairs[k].second;
      const size_t skipped_source = b - a - 1;
      const size_t skipped_candidate = pairs[k].first - pairs[k - 1].first - 1;
      if (skipped_source <= skipped_candidate) continue;  // a word swapped, none dropped
      // No word of the model's own may bridge the cut ("made a covenant with Abram, [saying ...:]
      // The Kenites" must not become "with Abram, and the Kenites").
      if (skipped_candidate > 0) return false;
      if (++cuts > 1 || !clause_break(a) || !clause_break(b - 1)) return false;
    }
    return true;
  };
  // Source words dropped after the last kept one: the kept part must end at a clause mark, and
  // where that mark is only a comma, its last clause must have at least three words. A comma
  // after a two-word aside leaves the sentence hanging: "For God, said he, hath made me forget
  // all my toil" must not become "For God, said he." ("God healed Abimelech, [and his wife]"
  // may end there).
  const auto tail_ok = [&](const std::vector<std::pair<size_t, size_t>>& pairs) {
    if (pairs.empty()) return false;
    const size_t last = pairs.back().second;
    if (last + 1 >= m) return true;
    const size_t from = static_cast<size_t>(sw[last].data() - source.data()) + sw[last].size();
    const size_t to = static_cast<size_t>(sw[last + 1].data() - source.data());
    const std::string_view after = source.substr(from, to - from);
    if (after.find_first_of(";:.!?") != std::string_view::npos) return true;
    if (after.find(',') == std::string_view::npos) return false;
    size_t clause_words = 1;
    for (size_t j = last; j > 0 && !clause_break(j - 1); --j) ++clause_words;
    return clause_words >= 3;
  };
  if (!(cuts_ok(early) && tail_ok(early)) && !(cuts_ok(late) && tail_ok(late))) return false;
  std::set<std::string> trigrams;
  for (size_t i = 0; i + 2 < n; ++i) {
    if (!trigrams.insert(c[i] + " " + c[i + 1] + " " + c[i + 2]).second) return false;  // looping
  }
  return true;
}

namespace {

std::string Trim(std::string_view s) {
  const auto blank = [](char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; };
  size_t b = 0;
  size_t e = s.size();
  while (b < e && blank(s[b])) ++b;
  while (e > b && blank(s[e - 1])) --e;
  return std::string(s.substr(b, e - b));
}

bool EndsSentence(std::string_view s) {
  if (s.empty()) return false;
  const char c = s.back();
  return c == '.' || c == '!' || c == '?' || c == '"' || c == '\'' || c == ')';
}

// The first line of the model's answer that is a sentence, not a preamble ("Here is ...:").
std::string AnswerLine(std::string_view answer) {
  size_t i = 0;
  while (i < answer.size()) {
    size_t eol = answer.find('\n', i);
    if (eol == std::string_view::npos) eol = answer.size();
    std::string line = Trim(answer.substr(i, eol - i));
    i = eol + 1;
    if (line.empty() || line.back() == ':') continue;
    if (line.size() >= 2 && line.front() == '"' && line.back() == '"')
      line = line.substr(1, line.size() - 2);
    return line;
  }
  return {};
}

// Asks the model to shorten `sentence`; returns its answer line and adds to *generated.
StatusOr<std::string> Condense(retriever::LongContextSession& session,
                               const model::ChatTemplate& chat, const std::string& sentence,
                               const SummarizerOptions& options, int64_t* generated) {
  const model::ChatMessage msg{
      "user", "Shorten this sentence. Keep its names and use its words.\n\n" + sentence};
  ASSIGN_OR_RETURN(std::string prompt, chat.Render(std::span<const model::ChatMessage>(&msg, 1),
                                                   /*add_generation_prompt=*/true));
  const std::vector<model::TokenId> ids =
      session.tokenizer()->Encode(prompt, /*add_special=*/false, /*parse_special=*/true);
  memory::SearchFilter nothing;  // a sentence needs no memory: retrieve nothing
  nothing.doc_ids = {options.doc_id};
  nothing.before_position = 0;
  RETURN_IF_ERROR(session.Begin(ids, "", nothing));
  ASSIGN_OR_RETURN(model::Sampler sampler, model::Sampler::Create(options.sampling));
  retriever::GenerateOptions go;
  go.max_tokens = options.condense_tokens;
  go.stop_strings = {"\n\n"};
  ASSIGN_OR_RETURN(retriever::GenerateResult r, session.Generate(go, sampler));
  *generated += static_cast<int64_t>(r.tokens.size());
  return AnswerLine(r.text);
}

// Picks a group's lines from its children's: the earliest line; then the best line of each child
// not yet represented when the budget allows, then the best remaining by score, by the names it
// brings and with a redundancy penalty; document order.
std::vector<SummaryLine> MergeLines(const std::vector<const SummaryNode*>& children, size_t budget,
                                    const std::map<int64_t, std::vector<float>>& vectors,
                                    const NameWeights& weights) {
  std::vector<SummaryLine> pool;
  std::vector<size_t> child_of;
  for (size_t c = 0; c < children.size(); ++c) {
    for (const SummaryLine& l : children[c]->lines) {
      pool.push_back(l);
      child_of.push_back(c);
    }
  }
  std::vector<bool> taken(pool.size(), false);
  std::vector<size_t> picked;
  if (!pool.empty()) {
    // A merged summary starts where its part starts: the earliest line always stays, so that the
    // brief summary opens with the document's first section.
    size_t first = 0;
    for (size_t i = 1; i < pool.size(); ++i) {
      if (pool[i].begin < pool[first].begin) first = i;
    }
    taken[first] = true;
    picked.push_back(first);
  }
  if (budget >= children.size() + picked.size()) {
    for (size_t c = 0; c < children.size(); ++c) {
      size_t best = pool.size();
      bool has_one = false;
      for (size_t i = 0; i < pool.size(); ++i) {
        has_one |= taken[i] && child_of[i] == c;
        if (!taken[i] && child_of[i] == c &&
            (best == pool.size() || pool[i].score > pool[best].score))
          best = i;
      }
      if (has_one) continue;
      if (best < pool.size()) {
        taken[best] = true;
        picked.push_back(best);
      }
    }
  }
  const auto vec = [&](size_t i) -> const std::vector<float>& { return vectors.at(pool[i].begin); };
  // The names each line brings; a line that brings names the picked lines lack is worth more,
  // so that the merged summary covers more of the cast.
  std::vector<std::vector<std::pair<std::string, double>>> line_names(pool.size());
  for (size_t i = 0; i < pool.size(); ++i) {
    std::set<std::string> seen;
    for (const NameOccurrence& n : FindNames(pool[i].text)) {
      auto it = weights.weight.find(n.name);
      if (!n.number && it != weights.weight.end() && seen.insert(n.name).second) {
        line_names[i].emplace_back(n.name, it->second);
      }
    }
  }
  std::set<std::string> covered;
  for (size_t p : picked) {
    for (const auto& nw : line_names[p]) covered.insert(nw.first);
  }
  const auto gain = [&](size_t i) {
    double g = 0.0;
    for (const auto& [name, w] : line_names[i]) g += covered.count(name) ? 0.0 : w;
    return g;
  };
  double max_gain = 1e-9;
  for (size_t i = 0; i < pool.size(); ++i) max_gain = std::max(max_gain, gain(i));
  while (picked.size() < budget) {
    size_t best = pool.size();
    double best_v = -1e300;
    for (size_t i = 0; i < pool.size(); ++i) {
      if (taken[i]) continue;
      double sim = 0.0;
      for (size_t p : picked) sim = std::max(sim, static_cast<double>(Dot(vec(i), vec(p))));
      const double v = pool[i].score + 0.5 * gain(i) / max_gain - 0.5 * sim;
      if (v > best_v) {
        best_v = v;
        best = i;
      }
    }
    if (best == pool.size()) break;
    taken[best] = true;
    picked.push_back(best);
    for (const auto& nw : line_names[best]) covered.insert(nw.first);
  }
  std::sort(picked.begin(), picked.end(),
            [&](size_t a, size_t b) { return pool[a].begin < pool[b].begin; });
  std::vector<SummaryLine> out;
  for (size_t i : picked) out.push_back(pool[i]);
  return out;
}

// The brief summary: lines from every section's, within `max_tokens` and `max_lines`. It opens
// with the document's first line; then, greedily, the line that adds most to
//   (thirds of the document represented) + (share of the top names mentioned)
//   + (name order: first mentions in the order the source introduces the names)
//   + 0.2 * (its score - its similarity to the lines already taken),
// while that gain is positive. These are the properties `muninn eval summary` measures
// (summary_eval.h), which is the point: a reader's paragraph should cover the whole book, name its
// main cast and meet the cast in the book's order. Document order.
std::vector<SummaryLine> SelectBrief(const std::vector<SummaryNode>& sections, int64_t max_tokens,
                                     size_t max_lines, const model::Tokenizer& tok,
                                     const std::map<int64_t, std::vector<float>>& vectors,
                                     const NameWeights& weights) {
  std::vector<const SummaryLine*> pool;
  for (const SummaryNode& n : sections) {
    for (const SummaryLine& l : n.lines) pool.push_back(&l);
  }
  std::vector<SummaryLine> out;
  if (pool.empty()) return out;
  const int64_t doc_begin = sections.front().begin;
  const double len = static_cast<double>(std::max<int64_t>(1, sections.back().end - doc_begin));
  std::vector<int> third(pool.size());
  std::vector<int64_t> tokens(pool.size());
  std::vector<std::vector<std::string>> names(pool.size());
  std::vector<std::vector<std::string>> top(pool.size());  // top names each line mentions
  const std::unordered_set<std::string> top_set(weights.top.begin(), weights.top.end());
  for (size_t i = 0; i < pool.size(); ++i) {
    third[i] =
        std::min(2, static_cast<int>(3.0 * static_cast<double>(pool[i]->begin - doc_begin) / len));
    tokens[i] = static_cast<int64_t>(tok.Encode(pool[i]->text, false, false).size()) + 1;
    names[i] = MentionedNames(pool[i]->text, weights);
    std::unordered_set<std::string> seen;
    for (std::string_view w : Words(pool[i]->text)) {
      if (top_set.count(std::string(w)) && seen.insert(std::string(w)).second)
        top[i].emplace_back(w);
    }
  }
  const double n_top = static_cast<double>(std::max<size_t>(1, top_set.size()));
  std::vector<size_t> picked = {0};  // pool is in document order: 0 opens the document
  int64_t used = tokens[0];
  // Value of a set of lines (indices into pool, any order).
  const auto value = [&](std::vector<size_t> set) {
    std::sort(set.begin(), set.end());
    std::array<bool, 3> thirds = {false, false, false};
    std::unordered_set<std::string> covered;
    std::vector<const std::vector<std::string>*> in_order;
    for (size_t i : set) {
      thirds[static_cast<size_t>(third[i])] = true;
      covered.insert(top[i].begin(), top[i].end());
      in_order.push_back(&names[i]);
    }
    return static_cast<double>(thirds[0] + thirds[1] + thirds[2]) +
           static_cast<double>(covered.size()) / n_top + NameOrder(in_order, weights);
  };
  const auto vec = [&](size_t i) -> const std::vector<float>& {
    return vectors.at(pool[i]->begin);
  };
  double current = value(picked);
  while (picked.size() < max_lines) {
    size_t best = pool.size();
    double best_gain = 0.0;
    double best_value = current;
    for (size_t i = 0; i < pool.size(); ++i) {
      if (std::find(picked.begin(), picked.end(), i) != picked.end()) continue;
      if (used + tokens[i] > max_tokens) continue;
      double sim = 0.0;
      for (size_t p : picked) sim = std::max(sim, static_cast<double>(Dot(vec(i), vec(p))));
      std::vector<size_t> with = picked;
      with.push_back(i);
      const double v = value(with);
      const double gain = v - current + 0.2 * (pool[i]->score - sim);
      if (gain > best_gain) {
        best_gain = gain;
        best = i;
        best_value = v;
      }
    }
    if (best == pool.size()) break;
    picked.push_back(best);
    used += tokens[best];
    current = best_value;
  }
  std::sort(picked.begin(), picked.end());
  for (size_t i : picked) out.push_back(*pool[i]);
  return out;
}

std::string JoinLines(const std::vector<SummaryLine>& lines) {
  std::string s;
  for (const SummaryLine& l : lines) {
    if (!s.empty()) s += ' ';
    s += l.text;
  }
  return s;
}

}  // namespace

StatusOr<SummaryResult> Summarize(retriever::LongContextSession& session,
                                  const model::ChatTemplate& chat, std::string_view text,
                                  const SummarizerOptions& options,
                                  const SummarizeProgress& progress,
                                  const retriever::TextCallback& on_text) {
  RETURN_IF_ERROR(options.Validate());
  RETURN_IF_ERROR(CheckDocumentText(text, options.max_input_bytes));
  const model::Tokenizer& tok = *session.tokenizer();
  const std::vector<model::TokenId> tokens = tok.Encode(text, false, false);
  SummaryResult result;
  result.n_tokens = static_cast<int64_t>(tokens.size());
  result.n_bytes = static_cast<int64_t>(text.size());
  if (options.ingest && session.options().use_memory) {
    RETURN_IF_ERROR(session
                        .IngestTokens(options.doc_id, tokens, 0,
                                      [&](int64_t done, int64_t total) {
                                        if (progress) progress("ingest", done, total);
                                      })
                        .status());
  }

  // ---- 1. sentences and sections ----
  const SegmentedText seg = SegmentText(text);
  result.n_sentences = static_cast<int64_t>(seg.sentences.size());
  if (seg.sentences.empty()) {
    return InvalidArgumentError(
        "the document has no sentence (no words outside headings): nothing to summarize");
  }
  const int64_t wanted =
      std::max<int64_t>(options.min_sections,
                        (result.n_tokens + options.section_tokens / 2) / options.section_tokens);
  const std::vector<Section> sections = CutSections(text, seg, wanted);
  result.n_sections = static_cast<int64_t>(sections.size());
  const NameWeights names = ComputeNameWeights(text, options.cover_top_names);

  // ---- 2. extract ----
  std::map<int64_t, std::vector<float>> vectors;  // by sentence begin, for merge redundancy
  std::vector<SummaryNode> level0;
  // Names the lines picked so far mention, and where the source first has them.
  std::unordered_set<std::string> seen_names;
  std::vector<int64_t> seen_offsets;
  const std::unordered_set<std::string> top_names(names.top.begin(), names.top.end());
  for (size_t si = 0; si < sections.size(); ++si) {
    const Section& sec = sections[si];
    std::vector<size_t> cand;
    std::vector<double> sal;
    for (size_t i = sec.first_sentence; i < sec.last_sentence; ++i) {
      const double v = Salience(seg.sentences[i], names, sec.begin, sec.end);
      if (seg.sentences[i].n_words >= 6) {
        cand.push_back(i);
        sal.push_back(v);
      }
    }
    if (cand.empty()) {  // only short sentences: take them all as candidates
      for (size_t i = sec.first_sentence; i < sec.last_sentence; ++i) {
        cand.push_back(i);
        sal.push_back(0.0);
      }
    }
    // Keep the best-named candidates (ties: earlier first), then score them with centrality.
    std::vector<size_t> order(cand.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return sal[a] > sal[b]; });
    order.resize(
        std::min<size_t>(order.size(), static_cast<size_t>(options.candidates_per_section)));
    // The document's opening sentence is a candidate whatever its names: a summary opens where
    // the book opens ("In the beginning God created the heaven and the earth.").
    const bool opening = si == 0 && seg.sentences[cand[0]].n_words >= 6;
    if (opening && std::find(order.begin(), order.end(), size_t{0}) == order.end()) {
      order.back() = 0;
    }
    std::sort(order.begin(), order.end());
    std::vector<std::string> texts;
    for (size_t o : order) texts.push_back(seg.sentences[cand[o]].text);
    ASSIGN_OR_RETURN(std::vector<std::vector<float>> vec, SentenceVectors(texts, options.embedder));
    std::vector<float> centroid(vec[0].size(), 0.0f);
    for (const auto& v : vec) {
      for (size_t d = 0; d < v.size(); ++d) centroid[d] += v[d];
    }
    double max_sal = 0.0;
    for (size_t o : order) max_sal = std::max(max_sal, sal[o]);
    std::vector<double> cent(order.size());
    double max_cent = 1e-9;
    for (size_t k = 0; k < order.size(); ++k) {
      cent[k] = static_cast<double>(Dot(vec[k], centroid));
      max_cent = std::max(max_cent, cent[k]);
    }
    std::vector<double> score(order.size());
    std::vector<std::string> cut_texts(order.size());
    for (size_t k = 0; k < order.size(); ++k) {
      score[k] = 0.6 * (max_sal > 0.0 ? sal[order[k]] / max_sal : 0.0) +
                 0.4 * std::max(0.0, cent[k] / max_cent);
      const std::string& t = texts[k];
      const size_t cut = ClauseCut(t, options.max_sentence_words);
      cut_texts[k] = t.substr(0, cut);
      if (cut < t.size()) cut_texts[k] += " \u2026";
      // A line that first names, late, someone the book introduced before the names the summary
      // already holds breaks the order a reader meets the cast in (summary_eval.h name order).
      const std::vector<std::string> line_names = MentionedNames(cut_texts[k], names);
      score[k] -=
          options.order_weight * AddedDiscordance(seen_offsets, seen_names, line_names, names);
      // ... and a line that names the book's main cast for the first time gains: the summary
      // should name them all somewhere.
      int64_t new_top = 0;
      for (const std::string& n : line_names) {
        new_top += !seen_names.count(n) && top_names.count(n) ? 1 : 0;
      }
      score[k] += options.cover_weight * std::min(1.0, static_cast<double>(new_top) / 2.0);
    }
    if (opening) score[0] = 2.0;  // above any other: MMR takes it first, then the usual picks
    SummaryNode node;
    node.begin = sec.begin;
    node.end = sec.end;
    node.label =
        SpanLabel(seg.headings, sec.begin, sec.end,
                  "part " + std::to_string(si + 1) + " of " + std::to_string(sections.size()));
    const size_t n_lines = static_cast<size_t>(options.sentences_per_section) + (opening ? 1 : 0);
    for (size_t k : SelectMmr(score, vec, n_lines)) {
      const Sentence& s = seg.sentences[cand[order[k]]];
      SummaryLine line;
      line.begin = s.begin;
      line.end = s.end;
      line.score = std::clamp(score[k], 0.0, 1.0);
      line.text = cut_texts[k];
      vectors[s.begin] = vec[k];
      for (const std::string& n : MentionedNames(line.text, names)) {
        if (seen_names.insert(n).second) seen_offsets.push_back(names.first_offset.at(n));
      }
      node.lines.push_back(std::move(line));
    }
    level0.push_back(std::move(node));
    if (progress)
      progress("select", static_cast<int64_t>(si + 1), static_cast<int64_t>(sections.size()));
  }

  // ---- 3. condense ----
  if (options.condense) {
    int64_t total = 0;
    for (const SummaryNode& n : level0) total += static_cast<int64_t>(n.lines.size());
    int64_t done = 0;
    for (SummaryNode& n : level0) {
      for (SummaryLine& line : n.lines) {
        const std::string source = line.text;
        ASSIGN_OR_RETURN(std::string c,
                         Condense(session, chat, source, options, &result.generated_tokens));
        if (!c.empty() && !EndsSentence(c)) c += '.';
        if (IsFaithfulCondensation(source, c)) {
          line.text = std::move(c);
          line.condensed = true;
          ++result.condensed_kept;
        } else {
          ++result.condensed_rejected;
        }
        if (progress) progress("condense", ++done, total);
      }
    }
  }

  // ---- 4. merge ----
  result.levels.push_back(std::move(level0));
  while (result.levels.back().size() > 1) {
    const std::vector<SummaryNode>& below = result.levels.back();
    const size_t fanout = static_cast<size_t>(options.merge_fanout);
    const bool root = below.size() <= fanout;
    std::vector<SummaryNode> next;
    for (size_t g = 0; g < below.size(); g += fanout) {
      SummaryNode node;
      std::vector<const SummaryNode*> children;
      for (size_t c = g; c < std::min(below.size(), g + fanout); ++c) {
        children.push_back(&below[c]);
        node.children.push_back(static_cast<int64_t>(c));
      }
      node.begin = children.front()->begin;
      node.end = children.back()->end;
      node.label = SpanLabel(
          seg.headings, node.begin, node.end,
          "parts " + std::to_string(g + 1) + "\u2013" + std::to_string(g + children.size()));
      node.lines =
          root ? SelectBrief(result.levels.front(), options.max_tokens,
                             static_cast<size_t>(options.brief_sentences), tok, vectors, names)
               : MergeLines(children, static_cast<size_t>(options.merge_keep), vectors, names);
      next.push_back(std::move(node));
    }
    result.levels.push_back(std::move(next));
    if (progress)
      progress("merge", static_cast<int64_t>(result.levels.size() - 1),
               static_cast<int64_t>(result.levels.size() - 1));
  }
  if (result.levels.size() == 1) {
    // One section: the root is a copy of it, so that levels.back() is always the root.
    SummaryNode root = result.levels[0][0];
    root.children = {0};
    result.levels.push_back({std::move(root)});
  }
  // The brief summary keeps to max_tokens: the least salient lines go first (one always stays).
  SummaryNode& root = result.levels.back().front();
  while (root.lines.size() > 1 &&
         static_cast<int64_t>(tok.Encode(JoinLines(root.lines), false, false).size()) >
             options.max_tokens) {
    auto worst = std::min_element(
        root.lines.begin(), root.lines.end(),
        [](const SummaryLine& a, const SummaryLine& b) { return a.score < b.score; });
    root.lines.erase(worst);
  }
  for (const SummaryNode& n : result.levels.front())
    result.section_summaries.push_back(JoinLines(n.lines));
  result.summary = JoinLines(root.lines);
  if (on_text) on_text(result.summary);
  return result;
}

bool ParseSummaryStyle(std::string_view name, SummaryStyle* out) {
  if (name == "brief")
    *out = SummaryStyle::kBrief;
  else if (name == "sections")
    *out = SummaryStyle::kSections;
  else if (name == "outline")
    *out = SummaryStyle::kOutline;
  else
    return false;
  return true;
}

namespace {

void Outline(const SummaryResult& r, size_t level, size_t index, int depth, bool prose,
             std::string* out) {
  const SummaryNode& n = r.levels[level][index];
  if (prose) {
    *out += JoinLines(n.lines) + "\n\n";
  } else {
    *out += std::string(static_cast<size_t>(2 * depth), ' ') + "- " + n.label + ": " +
            JoinLines(n.lines) + "\n";
  }
  if (level == 0) return;
  // A group of one child would repeat it; its grandchildren follow directly.
  if (n.children.size() == 1) {
    const SummaryNode& only = r.levels[level - 1][static_cast<size_t>(n.children[0])];
    if (level - 1 == 0) return;
    for (int64_t c : only.children)
      Outline(r, level - 2, static_cast<size_t>(c), depth + 1, prose, out);
    return;
  }
  for (int64_t c : n.children) Outline(r, level - 1, static_cast<size_t>(c), depth + 1, prose, out);
}

std::string Render(const SummaryResult& r, SummaryStyle style, bool prose) {
  std::string out;
  switch (style) {
    case SummaryStyle::kBrief:
      return r.summary + "\n";
    case SummaryStyle::kSections:
      for (const SummaryNode& n : r.sections()) {
        out +=
            prose ? JoinLines(n.lines) + "\n\n" : "[" + n.label + "] " + JoinLines(n.lines) + "\n";
      }
      return out;
    case SummaryStyle::kOutline: {
      // The root is the brief summary; the outline starts one level below it.
      const size_t top = r.levels.size() >= 2 ? r.levels.size() - 2 : 0;
      for (size_t i = 0; i < r.levels[top].size(); ++i) Outline(r, top, i, 0, prose, &out);
      return out;
    }
  }
  return out;
}

}  // namespace

std::string RenderSummary(const SummaryResult& result, SummaryStyle style) {
  return Render(result, style, false);
}

std::string SummaryProse(const SummaryResult& result, SummaryStyle style) {
  return Render(result, style, true);
}

}  // namespace muninn::tools
