// BertEmbedder: a sentence encoder (all-MiniLM-L6-v2) as the retrieval embedder. It reads the
// request text (the LLM tokens are not used). Thread-compatible.
#pragma once

#include <memory>

#include "muninn/model/bert_encoder.h"
#include "muninn/retriever/embedder.h"

namespace muninn::retriever {

class BertEmbedder final : public Embedder {
 public:
  // Takes ownership of `encoder` (must not be null).
  explicit BertEmbedder(std::unique_ptr<model::BertEncoder> encoder);
  std::string name() const override { return "minilm"; }
  int64_t dim() const override { return encoder_->dim(); }
  StatusOr<std::vector<float>> Embed(std::span<const EmbedRequest> requests) override;

 private:
  std::unique_ptr<model::BertEncoder> encoder_;
};

}  // namespace muninn::retriever
