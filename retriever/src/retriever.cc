#include "muninn/retriever/retriever.h"

#include <algorithm>

namespace muninn::retriever {

Status RetrieverOptions::Validate() const {
  if (top_k < 0 || top_k > 4096) {
    return InvalidArgumentError("retriever top_k must be in [0, 4096], got " + std::to_string(top_k));
  }
  return Status::Ok();
}

model::MemoryKV Retrieved::ForLayers(std::span<const int32_t> layers) const {
  model::MemoryKV mem;
  if (empty()) return mem;
  for (int32_t l : layers) {
    if (l < 0) continue;
    if (mem.layers.size() <= static_cast<size_t>(l)) mem.layers.resize(static_cast<size_t>(l) + 1);
    mem.layers[static_cast<size_t>(l)] = model::LayerMemoryKV{k, v};
  }
  return mem;
}

StatusOr<Retriever> Retriever::Create(memory::MemoryBank* bank, Embedder* embedder,
                                      const RetrieverOptions& options) {
  if (bank == nullptr || embedder == nullptr) {
    return InvalidArgumentError("Retriever needs a memory bank and an embedder");
  }
  RETURN_IF_ERROR(options.Validate());
  if (embedder->dim() != bank->dim()) {
    return InvalidArgumentError("embedder '" + embedder->name() + "' gives " +
                                std::to_string(embedder->dim()) +
                                "-d vectors but the memory bank stores " +
                                std::to_string(bank->dim()) +
                                "-d ones; use the embedder the bank was built with");
  }
  return Retriever(bank, embedder, options);
}

StatusOr<Retrieved> Retriever::Retrieve(const EmbedRequest& query,
                                        const memory::SearchFilter& filter) {
  if (options_.top_k == 0) return Retrieved{};
  ASSIGN_OR_RETURN(std::vector<float> q, embedder_->Embed(std::span<const EmbedRequest>(&query, 1)));
  return RetrieveByEmbedding(q, filter);
}

std::string_view RetrievalMethodName(RetrievalMethod m) {
  switch (m) {
    case RetrievalMethod::kDense: return "dense";
    case RetrievalMethod::kLexical: return "lexical";
    case RetrievalMethod::kHybrid: return "hybrid";
  }
  return "?";
}

StatusOr<RetrievalMethod> ParseRetrievalMethod(std::string_view name) {
  for (RetrievalMethod m :
       {RetrievalMethod::kDense, RetrievalMethod::kLexical, RetrievalMethod::kHybrid}) {
    if (name == RetrievalMethodName(m)) return m;
  }
  return InvalidArgumentError("unknown retrieval method '" + std::string(name) +
                              "' (dense, lexical or hybrid)");
}

StatusOr<std::vector<memory::SearchHit>> Retriever::Search(const EmbedRequest& query,
                                                           const memory::SearchFilter& filter,
                                                           int64_t k, RetrievalMethod method) {
  if (k < 0) return InvalidArgumentError("retrieval k must be >= 0");
  std::vector<memory::SearchHit> dense, lexical;
  if (k == 0) return dense;
  if (method != RetrievalMethod::kLexical) {
    ASSIGN_OR_RETURN(std::vector<float> q,
                     embedder_->Embed(std::span<const EmbedRequest>(&query, 1)));
    ASSIGN_OR_RETURN(auto results, bank_->Search(q, 1, k, filter, options_.count_retrievals));
    if (!results.empty()) dense = std::move(results[0]);
  }
  if (method != RetrievalMethod::kDense) {
    ASSIGN_OR_RETURN(lexical,
                     bank_->SearchText(query.text, k, filter, options_.count_retrievals));
  }
  if (method == RetrievalMethod::kDense) return dense;
  if (method == RetrievalMethod::kLexical) return lexical;
  std::vector<memory::SearchHit> out;
  auto take = [&](const memory::SearchHit& h) {
    for (const memory::SearchHit& o : out) {
      if (o.id == h.id) return;
    }
    if (static_cast<int64_t>(out.size()) < k) out.push_back(h);
  };
  for (size_t i = 0; i < std::max(dense.size(), lexical.size()); ++i) {
    if (i < dense.size()) take(dense[i]);
    if (i < lexical.size()) take(lexical[i]);
  }
  return out;
}

StatusOr<Retrieved> Retriever::RetrieveByEmbedding(std::span<const float> query,
                                                   const memory::SearchFilter& filter) {
  if (static_cast<int64_t>(query.size()) != bank_->dim()) {
    return InvalidArgumentError("query embedding has " + std::to_string(query.size()) +
                                " values, the bank expects " + std::to_string(bank_->dim()));
  }
  Retrieved out;
  if (options_.top_k == 0) return out;
  ASSIGN_OR_RETURN(auto results,
                   bank_->Search(query, 1, options_.top_k, filter, options_.count_retrievals));
  if (results.empty() || results[0].empty()) return out;
  out.hits = std::move(results[0]);
  std::sort(out.hits.begin(), out.hits.end(),
            [](const memory::SearchHit& a, const memory::SearchHit& b) { return a.id < b.id; });
  std::vector<memory::ChunkId> ids;
  ids.reserve(out.hits.size());
  for (const auto& h : out.hits) ids.push_back(h.id);
  ASSIGN_OR_RETURN(memory::FetchedKV kv, bank_->FetchKV(ids, DType::kF32));
  // The bank gives [n_head_kv, M, head_dim]; attention wants [M, n_head_kv, head_dim]: a view.
  ASSIGN_OR_RETURN(out.k, kv.k.Transpose(0, 1));
  ASSIGN_OR_RETURN(out.v, kv.v.Transpose(0, 1));
  return out;
}

}  // namespace muninn::retriever
