#include "muninn/retriever/hidden_state_embedder.h"

#include <algorithm>
#include <utility>

namespace muninn::retriever {

StatusOr<std::unique_ptr<HiddenStateEmbedder>> HiddenStateEmbedder::Create(model::Model* model,
                                                                           int32_t layer) {
  if (model == nullptr) return InvalidArgumentError("HiddenStateEmbedder needs a model");
  if (layer < 0 || layer > model->config().n_layer) {
    return InvalidArgumentError("hidden-state embedder layer " + std::to_string(layer) +
                                " is outside [0, " + std::to_string(model->config().n_layer) + "]");
  }
  return std::unique_ptr<HiddenStateEmbedder>(new HiddenStateEmbedder(model, layer));
}

StatusOr<std::vector<float>> HiddenStateEmbedder::Embed(std::span<const EmbedRequest> requests) {
  const int64_t d = dim();
  std::vector<float> out(requests.size() * static_cast<size_t>(d), 0.0f);
  for (size_t r = 0; r < requests.size(); ++r) {
    const auto& tokens = requests[r].tokens;
    if (tokens.empty()) continue;  // nothing to pool: a zero vector matches nothing
    float* row = out.data() + r * static_cast<size_t>(d);
    // The input of layer L is the output ("hidden") of layer L-1, or the embeddings for L = 0.
    const int32_t source = layer_ - 1;
    Status pooled = InternalError("the model reported no hidden state for layer " + std::to_string(source));
    model::ForwardOptions fo;
    fo.compute_logits = false;
    fo.last_layer = std::max(source, 0);
    fo.observer = [&](const model::Intermediate& im) {
      const bool match = source < 0 ? (im.name == "embeddings")
                                    : (im.name == "hidden" && im.layer == source);
      if (!match) return;
      Tensor h = im.value;  // [T, n_embd]
      if (!h.device().is_cpu()) {  // a device backend: read the rows on the host
        auto host = CopyToHost(*model_->backend(), h);
        if (!host.ok()) {
          pooled = host.status();
          return;
        }
        h = *std::move(host);
      }
      const int64_t t = h.dim(0);
      for (int64_t i = 0; i < t; ++i) {
        const float* src = reinterpret_cast<const float*>(static_cast<const char*>(h.data()) + i * h.stride(0));
        for (int64_t j = 0; j < d; ++j) row[j] += src[j];
      }
      pooled = Status::Ok();
    };
    RETURN_IF_ERROR(model_->Forward(tokens, nullptr, fo).status());
    RETURN_IF_ERROR(pooled);
  }
  L2NormalizeRows(out, d);
  return out;
}

}  // namespace muninn::retriever
