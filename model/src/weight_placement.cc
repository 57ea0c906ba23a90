#include "weight_placement.h"

#include <algorithm>
#include <map>
#include <utility>
#include <string>
#include <vector>

namespace muninn::model {
namespace {

// Every tensor field of the weights, for a uniform walk.
std::vector<Tensor*> AllTensors(ModelWeights* w) {
  std::vector<Tensor*> out = {&w->tok_embd, &w->output_norm, &w->output, &w->adapter};
  for (LayerWeights& l : w->layers) {
    for (Tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.w_gate, &l.w_up,
                      &l.w_down, &l.attn_post_norm, &l.ffn_post_norm, &l.q_bias, &l.k_bias,
                      &l.wqkv, &l.w_gate_up}) {
      out.push_back(t);
    }
  }
  return out;
}

}  // namespace

StatusOr<ModelWeights> PlaceWeightsOn(Backend* backend, ModelWeights weights) {
  const Device device = backend->device();
  std::map<const Buffer*, std::shared_ptr<Buffer>> moved;  // host buffer -> its device copy
  for (Tensor* t : AllTensors(&weights)) {
    if (!t->defined() || t->device() == device) continue;
    if (!t->device().is_cpu()) {
      return InvalidArgumentError("weight " + t->DebugString() + " lives on " +
                                  t->device().ToString() + ", neither the host nor " +
                                  device.ToString());
    }
    const std::shared_ptr<Buffer>& host = t->buffer();
    auto it = moved.find(host.get());
    if (it == moved.end()) {
      const int64_t size = static_cast<int64_t>(host->size());
      ASSIGN_OR_RETURN(Tensor src, Tensor::FromBuffer(host, 0, DType::kU8, Shape{size}));
      ASSIGN_OR_RETURN(Tensor dst, backend->Allocate(DType::kU8, Shape{size}));
      RETURN_IF_ERROR(backend->Transfer(src, &dst).WithContext("moving weights to " +
                                                               device.ToString()));
      it = moved.emplace(host.get(), dst.buffer()).first;
    }
    std::vector<int64_t> strides;
    for (int i = 0; i < t->ndim(); ++i) strides.push_back(t->stride(i));
    ASSIGN_OR_RETURN(*t, Tensor::FromBufferStrided(it->second, t->offset(), t->dtype(), t->shape(),
                                                   strides));
  }
  return weights;
}

StatusOr<ModelWeights> PlaceUpperLayersOn(Backend* backend, ModelWeights weights,
                                          int32_t host_layers) {
  const Device device = backend->device();
  std::vector<Tensor*> moving = {&weights.output_norm, &weights.output};
  for (size_t l = static_cast<size_t>(std::max(host_layers, 0)); l < weights.layers.size(); ++l) {
    LayerWeights& lw = weights.layers[l];
    for (Tensor* t : {&lw.attn_norm, &lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.ffn_norm, &lw.w_gate,
                      &lw.w_up, &lw.w_down, &lw.attn_post_norm, &lw.ffn_post_norm, &lw.q_bias,
                      &lw.k_bias}) {
      moving.push_back(t);
    }
    // Fused views (sandwich blocks) are not read by the forward; they would pin host memory.
    lw.wqkv = Tensor();
    lw.w_gate_up = Tensor();
  }
  // One device copy per distinct host view (a tied head shares nothing with the host's
  // embedding table: it gets its own copy, the table stays on the host for GetRows).
  std::vector<std::pair<Tensor, Tensor>> copies;  // host view -> its device copy
  for (Tensor* t : moving) {
    if (!t->defined() || t->device() == device) continue;
    if (!t->device().is_cpu()) {
      return InvalidArgumentError("weight " + t->DebugString() + " lives on " +
                                  t->device().ToString() + ", neither the host nor " +
                                  device.ToString());
    }
    auto same = std::find_if(copies.begin(), copies.end(),
                             [&](const auto& c) { return SameView(c.first, *t); });
    if (same != copies.end()) {
      *t = same->second;
      continue;
    }
    auto moved = ToBackend(*backend, *t);
    if (!moved.ok()) return moved.status().WithContext("moving weights to " + device.ToString());
    Tensor dev = std::move(moved).value();
    copies.emplace_back(*t, dev);
    *t = std::move(dev);
  }
  return weights;
}

}  // namespace muninn::model
