// Private to tools/: an Embedder that remembers the vectors of texts it has embedded, for evals
// that ingest the same haystack text many times (trials that differ only in a key or a fact).
// The vectors are those of the wrapped embedder, so results are identical with or without it.
// Thread-compatible, like every Embedder.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "muninn/retriever/embedder.h"

namespace muninn::tools {

class CachingEmbedder final : public retriever::Embedder {
 public:
  // `inner` is not owned. At most `max_entries` texts are remembered (the cache is emptied when
  // it is full).
  explicit CachingEmbedder(retriever::Embedder* inner, size_t max_entries = 65536)
      : inner_(inner), max_entries_(max_entries) {}
  std::string name() const override { return inner_->name(); }
  int64_t dim() const override { return inner_->dim(); }
  StatusOr<std::vector<float>> Embed(std::span<const retriever::EmbedRequest> requests) override;
  int64_t hits() const { return hits_; }
  int64_t misses() const { return misses_; }

 private:
  retriever::Embedder* inner_;
  size_t max_entries_;
  std::unordered_map<std::string, std::vector<float>> cache_;
  int64_t hits_ = 0;
  int64_t misses_ = 0;
};

}  // namespace muninn::tools
