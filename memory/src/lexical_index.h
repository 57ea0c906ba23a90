// LexicalIndex: an in-RAM inverted index over chunk texts, scored with Okapi BM25. It is the
// bank's second way to find a chunk: dense embeddings match meaning, but a small sentence embedder
// blurs rare exact words (a name, a made-up term, "pass key" in a book where neither word pairs
// up); BM25 ranks the chunk that shares those words first. Hybrid retrieval in the retriever uses
// both.
//
// Terms: maximal runs of ASCII letters and digits and of non-ASCII bytes (UTF-8 letters stay
// whole), ASCII lower-cased; one-character terms and a short list of English function words are
// dropped, both when indexing and when querying. No stemming.
//
// Derived data: the bank builds it from the stored texts on first use and keeps it in step with
// appends and deletes; it is never written to disk. Removal leaves the removed chunk's postings in
// place (skipped at search time) until Compact() rebuilds the lists; BM25's document frequencies
// count live chunks only.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace muninn::memory::internal {

// The terms of `text`, in order, with repeats.
std::vector<std::string> LexicalTerms(std::string_view text);

struct LexicalHit {
  uint64_t id = 0;
  float score = 0.0f;
};

class LexicalIndex {
 public:
  // BM25 parameters (the usual ones).
  static constexpr double kK1 = 1.2;
  static constexpr double kB = 0.75;

  // Adds chunk `id` with `text`. An id already present is replaced.
  void Add(uint64_t id, std::string_view text);
  // Removes chunk `id` (no-op when absent).
  void Remove(uint64_t id);
  // Drops the postings of removed chunks.
  void Compact();

  // The top `k` chunks for `query` among those `accept` takes (all when empty), by descending
  // BM25, ties by ascending id. Chunks sharing no term with the query are not returned.
  std::vector<LexicalHit> Search(std::string_view query, int64_t k,
                                 const std::function<bool(uint64_t)>& accept) const;

  int64_t size() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t dead_postings() const { return dead_postings_; }
  int64_t postings() const { return postings_; }

 private:
  struct Posting {
    uint64_t id;
    uint32_t tf;
  };
  struct Term {
    std::vector<Posting> postings;  // may hold removed chunks until Compact()
    int64_t live_df = 0;
  };
  std::unordered_map<std::string, Term> terms_;
  std::unordered_map<uint64_t, uint32_t> lengths_;  // live chunks: id -> number of terms
  std::unordered_map<uint64_t, std::vector<Term*>> chunk_terms_;  // live chunks' distinct terms
  std::unordered_set<uint64_t> dead_ids_;  // removed since the last Compact()
  int64_t total_length_ = 0;
  int64_t postings_ = 0;
  int64_t dead_postings_ = 0;
};

}  // namespace muninn::memory::internal
