#include "lexical_index.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <unordered_set>

namespace muninn::memory::internal {
namespace {

// English function words: frequent everywhere, so BM25 gives them almost no weight, but their
// posting lists would be the longest ones.
constexpr std::array<std::string_view, 64> kStopWords = {
    "an",   "and",  "are",  "as",    "at",    "be",   "been", "but",  "by",    "can",  "did",
    "do",   "does", "for",  "from",  "had",   "has",  "have", "he",   "her",   "him",  "his",
    "how",  "if",   "in",   "into",  "is",    "it",   "its",  "me",   "my",    "no",   "not",
    "of",   "on",   "or",   "our",   "she",   "so",   "than", "that", "the",   "their", "them",
    "then", "there", "they", "this", "to",    "unto", "up",   "us",   "was",   "we",   "were",
    "what", "when", "which", "who",  "will",  "with", "you",  "your", "shall"};

bool IsStopWord(std::string_view w) {
  return std::find(kStopWords.begin(), kStopWords.end(), w) != kStopWords.end();
}

bool IsWordByte(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

}  // namespace

std::vector<std::string> LexicalTerms(std::string_view text) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && !IsWordByte(static_cast<unsigned char>(text[i]))) ++i;
    const size_t start = i;
    while (i < text.size() && IsWordByte(static_cast<unsigned char>(text[i]))) ++i;
    if (i - start < 2) continue;
    std::string w(text.substr(start, i - start));
    for (char& c : w) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    if (IsStopWord(w)) continue;
    out.push_back(std::move(w));
  }
  return out;
}

void LexicalIndex::Add(uint64_t id, std::string_view text) {
  Remove(id);
  // Removed postings are recognised by their id being gone; an id that comes back must not find
  // its old ones (the bank never reuses ids, so this is for other callers).
  if (dead_ids_.count(id) != 0) Compact();
  const std::vector<std::string> words = LexicalTerms(text);
  std::unordered_map<std::string_view, uint32_t> tf;
  for (const std::string& w : words) ++tf[w];
  std::vector<Term*>& mine = chunk_terms_[id];
  mine.reserve(tf.size());
  for (const auto& [w, n] : tf) {
    Term& t = terms_[std::string(w)];
    t.postings.push_back({id, n});
    ++t.live_df;
    mine.push_back(&t);
  }
  postings_ += static_cast<int64_t>(tf.size());
  lengths_[id] = static_cast<uint32_t>(words.size());
  total_length_ += static_cast<int64_t>(words.size());
}

void LexicalIndex::Remove(uint64_t id) {
  auto it = lengths_.find(id);
  if (it == lengths_.end()) return;
  total_length_ -= it->second;
  lengths_.erase(it);
  auto ct = chunk_terms_.find(id);
  for (Term* t : ct->second) --t->live_df;
  dead_postings_ += static_cast<int64_t>(ct->second.size());
  chunk_terms_.erase(ct);
  dead_ids_.insert(id);
}

void LexicalIndex::Compact() {
  if (dead_ids_.empty()) return;
  for (auto it = terms_.begin(); it != terms_.end();) {
    std::vector<Posting>& p = it->second.postings;
    p.erase(std::remove_if(p.begin(), p.end(),
                           [&](const Posting& x) { return lengths_.count(x.id) == 0; }),
            p.end());
    if (p.empty()) {
      it = terms_.erase(it);  // no live chunk lists this term
    } else {
      ++it;
    }
  }
  postings_ -= dead_postings_;
  dead_postings_ = 0;
  dead_ids_.clear();
}

std::vector<LexicalHit> LexicalIndex::Search(std::string_view query, int64_t k,
                                             const std::function<bool(uint64_t)>& accept) const {
  std::vector<LexicalHit> out;
  if (k <= 0 || lengths_.empty()) return out;
  std::unordered_map<std::string, int> qtf;
  for (std::string& w : LexicalTerms(query)) ++qtf[std::move(w)];
  const double n = static_cast<double>(lengths_.size());
  const double avgdl = std::max(1.0, static_cast<double>(total_length_) / n);
  std::unordered_map<uint64_t, double> score;
  for (const auto& [w, qn] : qtf) {
    auto it = terms_.find(w);
    if (it == terms_.end() || it->second.live_df == 0) continue;
    const double df = static_cast<double>(it->second.live_df);
    const double idf = std::log(1.0 + (n - df + 0.5) / (df + 0.5));
    for (const Posting& p : it->second.postings) {
      auto len = lengths_.find(p.id);
      if (len == lengths_.end()) continue;  // removed
      if (accept && !accept(p.id)) continue;
      const double tf = p.tf;
      const double norm = kK1 * (1.0 - kB + kB * static_cast<double>(len->second) / avgdl);
      score[p.id] += qn * idf * tf * (kK1 + 1.0) / (tf + norm);
    }
  }
  out.reserve(score.size());
  for (const auto& [id, s] : score) out.push_back({id, static_cast<float>(s)});
  auto better = [](const LexicalHit& a, const LexicalHit& b) {
    return a.score != b.score ? a.score > b.score : a.id < b.id;
  };
  if (static_cast<int64_t>(out.size()) > k) {
    std::partial_sort(out.begin(), out.begin() + k, out.end(), better);
    out.resize(static_cast<size_t>(k));
  } else {
    std::sort(out.begin(), out.end(), better);
  }
  return out;
}

}  // namespace muninn::memory::internal
