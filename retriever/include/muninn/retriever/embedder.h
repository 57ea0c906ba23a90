// Embedder: turns chunk and query texts into retrieval vectors (float32, L2-normalised, fixed dim).
//
// Two kinds stand behind this one interface (retriever/src/*_embedder.cc):
//  - the model's own memory-layer hidden states, mean-pooled over the tokens (needs the tokens);
//  - a sentence encoder (all-MiniLM-L6-v2, BERT), which embeds the text.
// Each request carries both the text and the LLM tokens of that text, so either kind can serve it.
//
// Thread-compatible: one call at a time per embedder.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/model/tokenizer.h"

namespace muninn::retriever {

struct EmbedRequest {
  std::string_view text;                  // UTF-8 text of the chunk or query
  std::span<const model::TokenId> tokens; // the LLM's tokens of the same text (may be empty for
                                          // embedders that read text)
};

class Embedder {
 public:
  virtual ~Embedder() = default;
  virtual std::string name() const = 0;
  virtual int64_t dim() const = 0;
  // [requests.size(), dim()] row-major, each row L2-normalised (a zero row stays zero).
  virtual StatusOr<std::vector<float>> Embed(std::span<const EmbedRequest> requests) = 0;
};

// Scales each of the `n` rows of `x` ([n, dim]) to unit L2 norm; all-zero rows stay zero.
void L2NormalizeRows(std::span<float> x, int64_t dim);

}  // namespace muninn::retriever
