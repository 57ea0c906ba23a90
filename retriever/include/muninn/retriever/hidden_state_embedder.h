// HiddenStateEmbedder: the model's own hidden states as retrieval vectors. A text is run through
// the model's layers [0, layer) and the hidden state entering `layer` (the memory layer) is
// mean-pooled over its tokens and L2-normalised; dim = n_embd. Needs the LLM tokens of each
// request (EmbedRequest::tokens); no second model is loaded.
// Thread-compatible (it runs the model, which is).
#pragma once

#include "muninn/model/model.h"
#include "muninn/retriever/embedder.h"

namespace muninn::retriever {

class HiddenStateEmbedder final : public Embedder {
 public:
  // `model` is not owned. `layer` in [0, n_layer]: the pooled state is the input of that layer
  // (0 = the token embeddings).
  static StatusOr<std::unique_ptr<HiddenStateEmbedder>> Create(model::Model* model, int32_t layer);

  std::string name() const override { return "hidden:" + std::to_string(layer_); }
  int64_t dim() const override { return model_->config().n_embd; }
  StatusOr<std::vector<float>> Embed(std::span<const EmbedRequest> requests) override;

 private:
  HiddenStateEmbedder(model::Model* model, int32_t layer) : model_(model), layer_(layer) {}
  model::Model* model_;
  int32_t layer_;
};

}  // namespace muninn::retriever
