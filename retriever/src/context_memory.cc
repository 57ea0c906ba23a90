#include "muninn/retriever/context_memory.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <set>
#include <utility>

namespace muninn::retriever {

const char* ContextPositionName(ContextPosition p) {
  switch (p) {
    case ContextPosition::kConstant: return "constant";
    case ContextPosition::kContiguous: return "contiguous";
    case ContextPosition::kZero: return "zero";
  }
  return "?";
}

bool ParseContextPosition(std::string_view name, ContextPosition* out) {
  if (name == "constant") *out = ContextPosition::kConstant;
  else if (name == "contiguous") *out = ContextPosition::kContiguous;
  else if (name == "zero") *out = ContextPosition::kZero;
  else return false;
  return true;
}

const char* ContextSelectionName(ContextSelection s) {
  return s == ContextSelection::kEmbedder ? "embedder" : "representative_keys";
}

bool ParseContextSelection(std::string_view name, ContextSelection* out) {
  if (name == "embedder") *out = ContextSelection::kEmbedder;
  else if (name == "representative_keys" || name == "representative-keys") {
    *out = ContextSelection::kRepresentativeKeys;
  } else {
    return false;
  }
  return true;
}

Status ContextMemoryOptions::Validate(const model::ModelConfig& config) const {
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i] < 0 || layers[i] >= config.n_layer) {
      return InvalidArgumentError("context memory layer " + std::to_string(layers[i]) +
                                  " is outside the model's layers [0, " +
                                  std::to_string(config.n_layer) + ")");
    }
    if (std::find(layers.begin(), layers.begin() + static_cast<std::ptrdiff_t>(i), layers[i]) !=
        layers.begin() + static_cast<std::ptrdiff_t>(i)) {
      return InvalidArgumentError("context memory layer " + std::to_string(layers[i]) +
                                  " is listed twice");
    }
  }
  if (sink_tokens < 0 || sink_tokens > 65536) {
    return InvalidArgumentError("context memory sink_tokens must be in [0, 65536], got " +
                                std::to_string(sink_tokens));
  }
  if (representative_keys < 1 || representative_keys > 4096) {
    return InvalidArgumentError("context memory representative_keys must be in [1, 4096], got " +
                                std::to_string(representative_keys));
  }
  if (top_k < 0 || top_k > 4096) {
    return InvalidArgumentError("context memory top_k must be in [0, 4096], got " +
                                std::to_string(top_k));
  }
  return Status::Ok();
}

namespace {

bool Passes(const memory::SearchFilter& f, memory::ChunkId id, memory::DocumentId doc,
            int64_t position) {
  if (!f.doc_ids.empty() && std::find(f.doc_ids.begin(), f.doc_ids.end(), doc) == f.doc_ids.end()) {
    return false;
  }
  if (f.before_position >= 0 && position >= f.before_position) return false;
  if (f.before_id != 0 && id >= f.before_id) return false;
  return true;
}

const float* Row(const Tensor& t, int64_t i0, int64_t i1) {  // row [i0, i1, :] of a 3-d f32
  return reinterpret_cast<const float*>(static_cast<const char*>(t.data()) + i0 * t.stride(0) +
                                        i1 * t.stride(1));
}

}  // namespace

StatusOr<std::unique_ptr<ContextMemory>> ContextMemory::Create(model::Model* model,
                                                               memory::MemoryBank* bank,
                                                               Embedder* embedder,
                                                               const ContextMemoryOptions& options,
                                                               int64_t local_window) {
  if (model == nullptr || bank == nullptr) {
    return InvalidArgumentError("context memory needs a model and a memory bank");
  }
  const model::ModelConfig& cfg = model->config();
  RETURN_IF_ERROR(options.Validate(cfg));
  if (options.selection == ContextSelection::kEmbedder && embedder == nullptr) {
    return InvalidArgumentError("context memory with embedder selection needs an embedder");
  }
  if (local_window < 1 || local_window > int64_t{std::numeric_limits<int32_t>::max()}) {
    return InvalidArgumentError("context memory needs a local window in [1, 2^31)");
  }
  auto cm = std::unique_ptr<ContextMemory>(
      new ContextMemory(model, bank, embedder, options, local_window));
  cm->layers_ = options.layers;
  if (cm->layers_.empty()) {
    for (int32_t l = 0; l < cfg.n_layer; ++l) cm->layers_.push_back(l);
  }
  std::sort(cm->layers_.begin(), cm->layers_.end());
  if (bank->n_head_kv() != cm->bank_heads() || bank->head_dim() != cfg.head_dim) {
    return InvalidArgumentError(
        "context memory stores " + std::to_string(cm->layers_.size()) + " layers × " +
        std::to_string(cfg.n_head_kv) + " K/V heads × " + std::to_string(cfg.head_dim) +
        " per chunk, but the memory bank holds " + std::to_string(bank->n_head_kv()) + " × " +
        std::to_string(bank->head_dim()) + "; use a bank created for these context layers");
  }
  return cm;
}

int64_t ContextMemory::bank_heads() const {
  return static_cast<int64_t>(layers_.size()) * model_->config().n_head_kv;
}

StatusOr<ContextMemory::Window> ContextMemory::Ingest(std::span<const model::TokenId> tokens) {
  const model::ModelConfig& cfg = model_->config();
  const int64_t T = static_cast<int64_t>(tokens.size());
  const int64_t L = static_cast<int64_t>(layers_.size());
  const int64_t n_kv = cfg.n_head_kv, hd = cfg.head_dim, n_head = cfg.n_head;
  const bool representative = options_.selection == ContextSelection::kRepresentativeKeys;
  auto layer_index = [&](int32_t layer) -> int64_t {
    auto it = std::lower_bound(layers_.begin(), layers_.end(), layer);
    return it != layers_.end() && *it == layer ? it - layers_.begin() : -1;
  };
  model::ForwardOptions fo;
  fo.compute_logits = false;
  fo.capture_layers = layers_;
  fo.last_layer = layers_.back();
  std::vector<Tensor> q_rot(static_cast<size_t>(L));  // [T, n_head, hd] after RoPE at 0..T-1
  Status observer_status;
  if (representative) {
    fo.observer = [&](const model::Intermediate& im) {
      if (im.name != "q" || !observer_status.ok()) return;
      const int64_t li = layer_index(im.layer);
      if (li < 0) return;
      auto copy = im.value.Contiguous();
      if (!copy.ok()) {
        observer_status = copy.status();
        return;
      }
      q_rot[static_cast<size_t>(li)] = *std::move(copy);
    };
  }
  ASSIGN_OR_RETURN(model::ForwardResult r, model_->Forward(tokens, nullptr, fo));
  RETURN_IF_ERROR(observer_status);

  Window w;
  ASSIGN_OR_RETURN(w.k, Tensor::Empty(DType::kF32, Shape{L * n_kv, T, hd}));
  ASSIGN_OR_RETURN(w.v, Tensor::Empty(DType::kF32, Shape{L * n_kv, T, hd}));
  for (int64_t li = 0; li < L; ++li) {
    const model::ForwardResult::CapturedKV& c = r.captured[static_cast<size_t>(li)];
    for (int64_t h = 0; h < n_kv; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        std::memcpy(w.k.data_as<float>() + ((li * n_kv + h) * T + t) * hd, Row(c.k, t, h),
                    static_cast<size_t>(hd) * sizeof(float));
        std::memcpy(w.v.data_as<float>() + ((li * n_kv + h) * T + t) * hd, Row(c.v, t, h),
                    static_cast<size_t>(hd) * sizeof(float));
      }
    }
  }
  if (!representative) return w;

  // Representative keys: the R tokens that received the most attention (summed over heads) from
  // the chunk's own later tokens, under the model's causal softmax at positions 0..T-1.
  const int64_t R = options_.representative_keys;
  const int64_t G = n_head / n_kv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  w.representative.assign(static_cast<size_t>(L * R * n_kv * hd), 0.0f);
  std::vector<double> received(static_cast<size_t>(T)), p(static_cast<size_t>(T));
  for (int64_t li = 0; li < L; ++li) {
    const model::ForwardResult::CapturedKV& c = r.captured[static_cast<size_t>(li)];
    ASSIGN_OR_RETURN(Tensor k_rot, model::RotateMemoryKeys(model_->backend(), cfg.rope, c.k, 0));
    const Tensor& q = q_rot[static_cast<size_t>(li)];
    if (!q.defined()) return InternalError("context memory: layer queries were not observed");
    std::fill(received.begin(), received.end(), 0.0);
    for (int64_t h = 0; h < n_head; ++h) {
      const int64_t g = h / G;
      for (int64_t t = 1; t < T; ++t) {
        const float* qt = Row(q, t, h);
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t s = 0; s <= t; ++s) {
          const float* ks = Row(k_rot, s, g);
          float dot = 0.0f;
          for (int64_t i = 0; i < hd; ++i) dot += qt[i] * ks[i];
          p[static_cast<size_t>(s)] = dot * scale;
          mx = std::max(mx, p[static_cast<size_t>(s)]);
        }
        double sum = 0.0;
        for (int64_t s = 0; s <= t; ++s) sum += (p[static_cast<size_t>(s)] =
                                                     std::exp(p[static_cast<size_t>(s)] - mx));
        for (int64_t s = 0; s < t; ++s) received[static_cast<size_t>(s)] += p[static_cast<size_t>(s)] / sum;
      }
    }
    std::vector<int64_t> order(static_cast<size_t>(T));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return received[static_cast<size_t>(a)] > received[static_cast<size_t>(b)];
    });
    for (int64_t rr = 0; rr < R; ++rr) {
      // Fewer tokens than R: repeat the best one (harmless under the max over keys).
      const int64_t j = order[static_cast<size_t>(rr < T ? rr : 0)];
      for (int64_t g = 0; g < n_kv; ++g) {
        std::memcpy(&w.representative[static_cast<size_t>(((li * R + rr) * n_kv + g) * hd)],
                    Row(c.k, j, g), static_cast<size_t>(hd) * sizeof(float));
      }
    }
  }
  return w;
}

void ContextMemory::Remember(memory::ChunkId id, memory::DocumentId doc_id, int64_t position,
                             int64_t n_tokens, Window window) {
  Entry e;
  e.doc_id = doc_id;
  e.position = position;
  e.n_tokens = n_tokens;
  e.representative = std::move(window.representative);
  entries_[id] = std::move(e);
}

StatusOr<std::vector<float>> ContextMemory::MeanQueries(std::span<const model::TokenId> window) {
  const model::ModelConfig& cfg = model_->config();
  const int64_t L = static_cast<int64_t>(layers_.size());
  const int64_t n_head = cfg.n_head, hd = cfg.head_dim;
  std::vector<float> mean(static_cast<size_t>(L * n_head * hd), 0.0f);
  model::ForwardOptions fo;
  fo.compute_logits = false;
  fo.last_layer = layers_.back();
  fo.observer = [&](const model::Intermediate& im) {
    if (im.name != "q_pre_rope") return;
    auto it = std::lower_bound(layers_.begin(), layers_.end(), im.layer);
    if (it == layers_.end() || *it != im.layer) return;
    const int64_t li = it - layers_.begin();
    const Tensor& q = im.value;  // [T, n_head, hd]
    const int64_t T = q.dim(0);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < n_head; ++h) {
        const float* row = Row(q, t, h);
        float* dst = &mean[static_cast<size_t>((li * n_head + h) * hd)];
        for (int64_t i = 0; i < hd; ++i) dst[i] += row[i] / static_cast<float>(T);
      }
    }
  };
  RETURN_IF_ERROR(model_->Forward(window, nullptr, fo).status());
  if (options_.position == ContextPosition::kConstant) {
    // Memory is scored with queries rotated at the local window length; rotation is linear, so
    // rotating the mean equals the mean of the rotated queries.
    ASSIGN_OR_RETURN(Tensor t, Tensor::FromVector(Shape{L, n_head, hd}, mean));
    ASSIGN_OR_RETURN(Tensor pos, Tensor::Empty(DType::kI32, Shape{L}));
    for (int64_t i = 0; i < L; ++i) pos.data_as<int32_t>()[i] = static_cast<int32_t>(local_window_);
    RETURN_IF_ERROR(model_->backend()->Rope(t, pos, cfg.rope, &t));
    std::memcpy(mean.data(), t.data_as<float>(), mean.size() * sizeof(float));
  }
  return mean;
}

StatusOr<std::vector<std::vector<memory::ChunkId>>> ContextMemory::SelectByEmbedder(
    std::string_view query_text, std::span<const model::TokenId> window,
    const memory::SearchFilter& filter, const std::vector<memory::ChunkId>& sinks,
    std::vector<memory::SearchHit>* scored) {
  std::vector<memory::ChunkId> chosen;
  if (options_.top_k > 0) {
    const EmbedRequest req{query_text, window};
    ASSIGN_OR_RETURN(std::vector<float> q, embedder_->Embed(std::span<const EmbedRequest>(&req, 1)));
    // Sinks are in memory anyway: ask for enough hits to fill top_k with others.
    const int64_t k = options_.top_k + static_cast<int64_t>(sinks.size());
    ASSIGN_OR_RETURN(auto results, bank_->Search(q, 1, k, filter, /*count_retrievals=*/true));
    for (const memory::SearchHit& h : results.empty() ? std::vector<memory::SearchHit>{}
                                                       : results[0]) {
      if (static_cast<int64_t>(chosen.size()) >= options_.top_k) break;
      if (std::find(sinks.begin(), sinks.end(), h.id) != sinks.end()) continue;
      chosen.push_back(h.id);
      scored->push_back(h);
    }
  }
  return std::vector<std::vector<memory::ChunkId>>(layers_.size(), chosen);
}

StatusOr<std::vector<std::vector<memory::ChunkId>>> ContextMemory::SelectByRepresentativeKeys(
    std::span<const model::TokenId> window, const memory::SearchFilter& filter,
    const std::vector<memory::ChunkId>& sinks) {
  const model::ModelConfig& cfg = model_->config();
  const int64_t L = static_cast<int64_t>(layers_.size());
  const int64_t n_head = cfg.n_head, n_kv = cfg.n_head_kv, hd = cfg.head_dim;
  const int64_t G = n_head / n_kv, R = options_.representative_keys;
  std::vector<std::vector<memory::ChunkId>> out(static_cast<size_t>(L));
  std::vector<std::pair<memory::ChunkId, const Entry*>> candidates;
  for (const auto& [id, e] : entries_) {
    if (!Passes(filter, id, e.doc_id, e.position)) continue;
    if (std::find(sinks.begin(), sinks.end(), id) != sinks.end()) continue;
    candidates.emplace_back(id, &e);
  }
  if (candidates.empty() || options_.top_k == 0) return out;
  std::sort(candidates.begin(), candidates.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  ASSIGN_OR_RETURN(std::vector<float> qbar, MeanQueries(window));  // [L, n_head, hd]
  std::vector<std::pair<float, memory::ChunkId>> scores(candidates.size());
  for (int64_t li = 0; li < L; ++li) {
    for (size_t c = 0; c < candidates.size(); ++c) {
      const float* rep = candidates[c].second->representative.data() + li * R * n_kv * hd;
      double total = 0.0;
      for (int64_t h = 0; h < n_head; ++h) {
        const float* q = &qbar[static_cast<size_t>((li * n_head + h) * hd)];
        float best = -std::numeric_limits<float>::infinity();
        for (int64_t r = 0; r < R; ++r) {
          const float* k = rep + (r * n_kv + h / G) * hd;
          float dot = 0.0f;
          for (int64_t i = 0; i < hd; ++i) dot += q[i] * k[i];
          best = std::max(best, dot);
        }
        total += best;
      }
      scores[c] = {static_cast<float>(total / static_cast<double>(n_head)), candidates[c].first};
    }
    const size_t k = std::min(scores.size(), static_cast<size_t>(options_.top_k));
    std::partial_sort(scores.begin(), scores.begin() + static_cast<std::ptrdiff_t>(k), scores.end(),
                      [](const auto& a, const auto& b) {
                        return a.first > b.first || (a.first == b.first && a.second < b.second);
                      });
    for (size_t i = 0; i < k; ++i) out[static_cast<size_t>(li)].push_back(scores[i].second);
  }
  return out;
}

StatusOr<model::MemoryKV> ContextMemory::Build(std::string_view query_text,
                                               std::span<const model::TokenId> window,
                                               const memory::SearchFilter& filter,
                                               std::vector<memory::SearchHit>* hits) {
  hits->clear();
  const model::ModelConfig& cfg = model_->config();
  const int64_t L = static_cast<int64_t>(layers_.size());
  const int64_t n_kv = cfg.n_head_kv, hd = cfg.head_dim;
  const std::vector<memory::ChunkInfo> all = bank_->ListChunks();
  std::unordered_map<memory::ChunkId, memory::ChunkInfo> info;
  for (const memory::ChunkInfo& c : all) {
    if (Passes(filter, c.id, c.doc_id, c.position)) info[c.id] = c;
  }
  if (info.empty()) return model::MemoryKV{};
  // Sinks of the filter's documents (of the chosen chunks' documents when it names none).
  auto sinks_of = [&](const std::set<memory::DocumentId>& docs) {
    std::vector<memory::ChunkId> s;
    for (const auto& [id, c] : info) {
      if (c.position < options_.sink_tokens && docs.count(c.doc_id) > 0) s.push_back(id);
    }
    std::sort(s.begin(), s.end());
    return s;
  };
  std::vector<memory::ChunkId> sinks =
      sinks_of(std::set<memory::DocumentId>(filter.doc_ids.begin(), filter.doc_ids.end()));

  std::vector<memory::SearchHit> scored;
  std::vector<std::vector<memory::ChunkId>> per_layer;
  if (options_.selection == ContextSelection::kEmbedder) {
    ASSIGN_OR_RETURN(per_layer, SelectByEmbedder(query_text, window, filter, sinks, &scored));
  } else {
    for (const auto& [id, c] : info) {
      if (entries_.count(id) == 0) {
        return FailedPreconditionError(
            "representative-key selection needs chunks ingested by this session (chunk " +
            std::to_string(id) + " of document " + std::to_string(c.doc_id) +
            " has no representative keys: the bank does not store them); re-ingest the document "
            "in this session or select chunks with the embedder");
      }
    }
    ASSIGN_OR_RETURN(per_layer, SelectByRepresentativeKeys(window, filter, sinks));
  }
  if (filter.doc_ids.empty()) {
    std::set<memory::DocumentId> docs;
    for (const auto& ids : per_layer) {
      for (memory::ChunkId id : ids) docs.insert(info.at(id).doc_id);
    }
    sinks = sinks_of(docs);
  }

  // Fetch the union once: [L · n_kv, M_all, hd] in ascending id order.
  std::set<memory::ChunkId> union_ids(sinks.begin(), sinks.end());
  for (const auto& ids : per_layer) union_ids.insert(ids.begin(), ids.end());
  if (union_ids.empty()) return model::MemoryKV{};
  const std::vector<memory::ChunkId> ids(union_ids.begin(), union_ids.end());
  ASSIGN_OR_RETURN(memory::FetchedKV kv, bank_->FetchKV(ids, DType::kF32));
  std::unordered_map<memory::ChunkId, std::pair<int64_t, int64_t>> span;  // id → (offset, length)
  int64_t offset = 0;
  for (size_t i = 0; i < kv.ids.size(); ++i) {
    span[kv.ids[i]] = {offset, kv.lengths[i]};
    offset += kv.lengths[i];
  }
  for (memory::ChunkId id : ids) {
    memory::SearchHit h;
    h.id = id;
    const memory::ChunkInfo& c = info.at(id);
    h.doc_id = c.doc_id;
    h.position = c.position;
    h.n_tokens = c.n_tokens;
    for (const memory::SearchHit& s : scored) {
      if (s.id == id) h.score = s.score;
    }
    hits->push_back(h);
  }

  model::MemoryKV mem;
  mem.layers.resize(static_cast<size_t>(layers_.back()) + 1);
  for (int64_t li = 0; li < L; ++li) {
    // This layer's chunks in chronological order; a sink chunk it did not select contributes
    // only its tokens before sink_tokens.
    std::set<memory::ChunkId> mine(sinks.begin(), sinks.end());
    const auto& sel = per_layer[static_cast<size_t>(li)];
    mine.insert(sel.begin(), sel.end());
    std::vector<std::pair<int64_t, int64_t>> rows;  // (offset in kv, tokens)
    int64_t M = 0;
    for (memory::ChunkId id : mine) {
      auto [off, len] = span.at(id);
      if (std::find(sel.begin(), sel.end(), id) == sel.end()) {
        len = std::min(len, std::max<int64_t>(0, options_.sink_tokens - info.at(id).position));
      }
      rows.emplace_back(off, len);
      M += len;
    }
    if (M == 0) continue;
    ASSIGN_OR_RETURN(Tensor k, Tensor::Empty(DType::kF32, Shape{M, n_kv, hd}));
    ASSIGN_OR_RETURN(Tensor v, Tensor::Empty(DType::kF32, Shape{M, n_kv, hd}));
    int64_t m = 0;
    for (const auto& [off, len] : rows) {
      for (int64_t t = 0; t < len; ++t, ++m) {
        for (int64_t g = 0; g < n_kv; ++g) {
          std::memcpy(k.data_as<float>() + (m * n_kv + g) * hd, Row(kv.k, li * n_kv + g, off + t),
                      static_cast<size_t>(hd) * sizeof(float));
          std::memcpy(v.data_as<float>() + (m * n_kv + g) * hd, Row(kv.v, li * n_kv + g, off + t),
                      static_cast<size_t>(hd) * sizeof(float));
        }
      }
    }
    model::LayerMemoryKV lm;
    lm.v = v;
    switch (options_.position) {
      case ContextPosition::kConstant:
        lm.k = k;
        lm.query_position = local_window_;
        break;
      case ContextPosition::kContiguous: {
        ASSIGN_OR_RETURN(lm.k, model::RotateMemoryKeys(model_->backend(), cfg.rope, k, -M));
        break;
      }
      case ContextPosition::kZero:
        lm.k = k;
        break;
    }
    mem.layers[static_cast<size_t>(layers_[static_cast<size_t>(li)])] = std::move(lm);
  }
  return mem;
}

}  // namespace muninn::retriever
