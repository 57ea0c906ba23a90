#include "muninn/retriever/bert_embedder.h"

#include "muninn/core/check.h"

namespace muninn::retriever {

BertEmbedder::BertEmbedder(std::unique_ptr<model::BertEncoder> encoder)
    : encoder_(std::move(encoder)) {
  MUNINN_CHECK(encoder_ != nullptr);
}

StatusOr<std::vector<float>> BertEmbedder::Embed(std::span<const EmbedRequest> requests) {
  std::vector<std::string> texts;
  texts.reserve(requests.size());
  for (const EmbedRequest& r : requests) texts.emplace_back(r.text);
  ASSIGN_OR_RETURN(std::vector<float> out, encoder_->Embed(texts));
  // The encoder normalises when its pooling config says so; make the contract hold regardless.
  if (!out.empty()) L2NormalizeRows(out, dim());
  return out;
}

}  // namespace muninn::retriever
