// Retriever: picks the stored chunks that matter for a query and hands their memory-layer K/V to
// the model as plain tensors (MemLong's read path, specs/memlong.md §5).
//
//   embed(query) → bank top-k by inner product (with the caller's filter: documents, "only chunks
//   before position p" so a window never retrieves itself or the future) → fetch K/V of the hits
//   → sort chronologically (ascending chunk id) → [M, n_head_kv, head_dim] views.
//
// With no stored chunk (or k = 0) the result is empty and retrieval layers run as plain layers.
// Thread-compatible: one call at a time (the embedder is stateful); the bank is thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/core/tensor.h"
#include "muninn/memory/memory_bank.h"
#include "muninn/model/memory_kv.h"
#include "muninn/retriever/embedder.h"

namespace muninn::retriever {

// How Search ranks chunks: by embedding (meaning), by BM25 over the chunk text (words), or both.
// Hybrid takes the two rankings in turn — dense 1st, lexical 1st, dense 2nd, … — skipping repeats,
// so the best chunk of each method is always in a top-k of two or more: a question that names a
// rare word finds the chunk holding it even where the small embedder ranks it low, and a
// paraphrased question still gets the embedder's best.
enum class RetrievalMethod : uint8_t { kDense = 0, kLexical = 1, kHybrid = 2 };
std::string_view RetrievalMethodName(RetrievalMethod m);
StatusOr<RetrievalMethod> ParseRetrievalMethod(std::string_view name);

struct RetrieverOptions {
  int64_t top_k = 8;              // chunks per query; k_eff = min(top_k, matching chunks)
  bool count_retrievals = true;   // feed the bank's frequency eviction
  Status Validate() const;
};

struct Retrieved {
  std::vector<memory::SearchHit> hits;  // chronological (ascending id)
  Tensor k;  // [M, n_head_kv, head_dim] f32 (a view; undefined when nothing was retrieved)
  Tensor v;  // [M, n_head_kv, head_dim] f32
  int64_t n_tokens() const { return k.defined() ? k.dim(0) : 0; }
  bool empty() const { return hits.empty(); }
  // The same memory for every layer in `layers` (MemLong: one stored K/V serves all retrieval
  // layers, specs/memlong.md §3).
  model::MemoryKV ForLayers(std::span<const int32_t> layers) const;
};

class Retriever {
 public:
  // `bank` and `embedder` are not owned and must outlive the retriever. The embedder's dim must
  // equal the bank's (InvalidArgument otherwise).
  static StatusOr<Retriever> Create(memory::MemoryBank* bank, Embedder* embedder,
                                    const RetrieverOptions& options);

  StatusOr<Retrieved> Retrieve(const EmbedRequest& query, const memory::SearchFilter& filter);
  // Only the hits (no K/V): the top `k` chunks, best first (re-read text, kNN-LM). A hit's score
  // is its method's (inner product or BM25; hybrid keeps each hit's own).
  StatusOr<std::vector<memory::SearchHit>> Search(const EmbedRequest& query,
                                                  const memory::SearchFilter& filter, int64_t k,
                                                  RetrievalMethod method = RetrievalMethod::kDense);
  // For callers that already hold the query embedding ([dim], L2-normalised).
  StatusOr<Retrieved> RetrieveByEmbedding(std::span<const float> query,
                                          const memory::SearchFilter& filter);

  memory::MemoryBank* bank() const { return bank_; }
  Embedder* embedder() const { return embedder_; }
  const RetrieverOptions& options() const { return options_; }

 private:
  Retriever(memory::MemoryBank* bank, Embedder* embedder, const RetrieverOptions& options)
      : bank_(bank), embedder_(embedder), options_(options) {}
  memory::MemoryBank* bank_;
  Embedder* embedder_;
  RetrieverOptions options_;
};

}  // namespace muninn::retriever
