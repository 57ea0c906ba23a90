#include "muninn/retriever/context_memory.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <set>
#include <tuple>
#include <utility>

namespace muninn::retriever {

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

StatusOr<std::pair<Tensor, Tensor>> StackLayerKV(
    const std::vector<model::ForwardResult::CapturedKV>& captured) {
  if (captured.empty() || !captured[0].k.defined()) {
    return InvalidArgumentError("no captured K/V to stack");
  }
  const int64_t L = static_cast<int64_t>(captured.size());
  const int64_t T = captured[0].k.dim(0), n_kv = captured[0].k.dim(1), hd = captured[0].k.dim(2);
  ASSIGN_OR_RETURN(Tensor k, Tensor::Empty(DType::kF32, Shape{L * n_kv, T, hd}));
  ASSIGN_OR_RETURN(Tensor v, Tensor::Empty(DType::kF32, Shape{L * n_kv, T, hd}));
  for (int64_t li = 0; li < L; ++li) {
    const model::ForwardResult::CapturedKV& c = captured[static_cast<size_t>(li)];
    if (!c.k.defined() || !(c.k.shape() == Shape{T, n_kv, hd}) || !(c.v.shape() == c.k.shape())) {
      return InvalidArgumentError("captured K/V of layer " + std::to_string(c.layer) +
                                  " is missing or differently shaped");
    }
    for (int64_t h = 0; h < n_kv; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        std::memcpy(k.data_as<float>() + ((li * n_kv + h) * T + t) * hd, Row(c.k, t, h),
                    static_cast<size_t>(hd) * sizeof(float));
        std::memcpy(v.data_as<float>() + ((li * n_kv + h) * T + t) * hd, Row(c.v, t, h),
                    static_cast<size_t>(hd) * sizeof(float));
      }
    }
  }
  return std::make_pair(std::move(k), std::move(v));
}

StatusOr<std::unique_ptr<ContextMemory>> ContextMemory::Create(model::Model* model,
                                                               memory::MemoryBank* bank,
                                                               Embedder* embedder,
                                                               const ContextMemoryOptions& options,
                                                               std::vector<int32_t> bank_layers,
                                                               int64_t local_window) {
  if (model == nullptr || bank == nullptr) {
    return InvalidArgumentError("context memory needs a model and a memory bank");
  }
  const model::ModelConfig& cfg = model->config();
  if (options.selection == ChunkSelection::kEmbedder && embedder == nullptr) {
    return InvalidArgumentError("context memory with embedder selection needs an embedder");
  }
  if (local_window < 1 || local_window > int64_t{std::numeric_limits<int32_t>::max()}) {
    return InvalidArgumentError("context memory needs a local window in [1, 2^31)");
  }
  auto cm = std::unique_ptr<ContextMemory>(
      new ContextMemory(model, bank, embedder, options, local_window));
  cm->layers_ = options.ResolvedLayers(cfg.n_layer);
  std::sort(bank_layers.begin(), bank_layers.end());
  cm->bank_layers_ = std::move(bank_layers);
  for (int32_t l : cm->layers_) {
    if (l < 0 || l >= cfg.n_layer) {
      return InvalidArgumentError("context memory layer " + std::to_string(l) +
                                  " is not a layer of the model");
    }
    auto it = std::lower_bound(cm->bank_layers_.begin(), cm->bank_layers_.end(), l);
    if (it == cm->bank_layers_.end() || *it != l) {
      return InvalidArgumentError("the memory bank holds no K/V of context layer " +
                                  std::to_string(l) +
                                  "; ingest into a bank made for these context layers");
    }
    cm->bank_index_.push_back(it - cm->bank_layers_.begin());
  }
  if (cm->layers_.empty()) return InvalidArgumentError("context memory needs at least one layer");
  if (bank->n_head_kv() != cfg.n_head_kv || bank->head_dim() != cfg.head_dim ||
      bank->n_kv_layers() != static_cast<int64_t>(cm->bank_layers_.size())) {
    return InvalidArgumentError(
        "context memory needs a bank of " + std::to_string(cm->bank_layers_.size()) +
        " K/V layers × " + std::to_string(cfg.n_head_kv) + " heads × " +
        std::to_string(cfg.head_dim) + ", but it holds " + std::to_string(bank->n_kv_layers()) +
        " × " + std::to_string(bank->n_head_kv()) + " × " + std::to_string(bank->head_dim()) +
        "; use a bank made for this model and these context layers");
  }
  return cm;
}

StatusOr<ContextMemory::Window> ContextMemory::Ingest(std::span<const model::TokenId> tokens) {
  ASSIGN_OR_RETURN(std::vector<Window> w,
                   IngestSegment(tokens, static_cast<int64_t>(tokens.size())));
  return std::move(w.front());
}

StatusOr<std::vector<ContextMemory::Window>> ContextMemory::IngestSegment(
    std::span<const model::TokenId> tokens, int64_t chunk_tokens) {
  const model::ModelConfig& cfg = model_->config();
  const int64_t T = static_cast<int64_t>(tokens.size());
  if (T < 1 || chunk_tokens < 1) return InvalidArgumentError("ingest needs tokens and chunks");
  const int64_t L = static_cast<int64_t>(layers_.size());
  const int64_t n_kv = cfg.n_head_kv, hd = cfg.head_dim, n_head = cfg.n_head;
  const bool representative = options_.selection == ChunkSelection::kRepresentativeKeys;
  auto layer_index = [&](int32_t layer) -> int64_t {
    auto it = std::lower_bound(layers_.begin(), layers_.end(), layer);
    return it != layers_.end() && *it == layer ? it - layers_.begin() : -1;
  };
  model::ForwardOptions fo;
  fo.compute_logits = false;
  fo.capture_layers = bank_layers_;
  fo.last_layer = bank_layers_.back();
  std::vector<Tensor> q_rot(static_cast<size_t>(L));  // [T, n_head, hd] after RoPE at 0..T-1
  Status observer_status;
  if (representative) {
    fo.observer = [&](const model::Intermediate& im) {
      if (im.name != "q" || !observer_status.ok()) return;
      const int64_t li = layer_index(im.layer);
      if (li < 0) return;
      auto copy = CopyToHost(*model_->backend(), im.value);
      if (!copy.ok()) {
        observer_status = copy.status();
        return;
      }
      q_rot[static_cast<size_t>(li)] = *std::move(copy);
    };
  }
  ASSIGN_OR_RETURN(model::ForwardResult r, model_->Forward(tokens, nullptr, fo));
  RETURN_IF_ERROR(observer_status);
  std::vector<Tensor> k_rot(static_cast<size_t>(L));  // [T, n_kv, hd] rotated at 0..T-1
  if (representative) {
    for (int64_t li = 0; li < L; ++li) {
      const Tensor& k = r.captured[static_cast<size_t>(bank_index_[static_cast<size_t>(li)])].k;
      ASSIGN_OR_RETURN(Tensor rot, model::RotateMemoryKeys(model_->backend(), cfg.rope, k, 0));
      if (!rot.device().is_cpu()) {  // rotated on a device: the scores below run on the host
        ASSIGN_OR_RETURN(rot, CopyToHost(*model_->backend(), rot));
      }
      k_rot[static_cast<size_t>(li)] = std::move(rot);
      if (!q_rot[static_cast<size_t>(li)].defined()) {
        return InternalError("context memory: layer queries were not observed");
      }
    }
  }

  std::vector<Window> out;
  for (int64_t b = 0; b < T; b += chunk_tokens) {
    const int64_t e = std::min(T, b + chunk_tokens), n = e - b;
    std::vector<model::ForwardResult::CapturedKV> rows(r.captured.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      rows[i].layer = r.captured[i].layer;
      ASSIGN_OR_RETURN(rows[i].k, r.captured[i].k.Slice(0, b, e));
      ASSIGN_OR_RETURN(rows[i].v, r.captured[i].v.Slice(0, b, e));
    }
    Window w;
    ASSIGN_OR_RETURN(std::tie(w.k, w.v), StackLayerKV(rows));
    if (representative) {
      // Representative keys: the R tokens of the chunk that received the most attention (summed
      // over heads) from the chunk's own later tokens, under the model's causal softmax
      // restricted to the chunk (positions as in the pass).
      const int64_t R = options_.representative_keys;
      const int64_t G = n_head / n_kv;
      const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
      w.representative.assign(static_cast<size_t>(L * R * n_kv * hd), 0.0f);
      std::vector<double> received(static_cast<size_t>(n)), p(static_cast<size_t>(n));
      for (int64_t li = 0; li < L; ++li) {
        const Tensor& q = q_rot[static_cast<size_t>(li)];
        const Tensor& kr = k_rot[static_cast<size_t>(li)];
        std::fill(received.begin(), received.end(), 0.0);
        for (int64_t h = 0; h < n_head; ++h) {
          const int64_t g = h / G;
          for (int64_t t = 1; t < n; ++t) {
            const float* qt = Row(q, b + t, h);
            double mx = -std::numeric_limits<double>::infinity();
            for (int64_t s2 = 0; s2 <= t; ++s2) {
              const float* ks = Row(kr, b + s2, g);
              float dot = 0.0f;
              for (int64_t i = 0; i < hd; ++i) dot += qt[i] * ks[i];
              p[static_cast<size_t>(s2)] = dot * scale;
              mx = std::max(mx, p[static_cast<size_t>(s2)]);
            }
            double sum = 0.0;
            for (int64_t s2 = 0; s2 <= t; ++s2) {
              sum += (p[static_cast<size_t>(s2)] = std::exp(p[static_cast<size_t>(s2)] - mx));
            }
            for (int64_t s2 = 0; s2 < t; ++s2) {
              received[static_cast<size_t>(s2)] += p[static_cast<size_t>(s2)] / sum;
            }
          }
        }
        std::vector<int64_t> order(static_cast<size_t>(n));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t c) {
          return received[static_cast<size_t>(a)] > received[static_cast<size_t>(c)];
        });
        const Tensor& k = r.captured[static_cast<size_t>(bank_index_[static_cast<size_t>(li)])].k;
        for (int64_t rr = 0; rr < R; ++rr) {
          // Fewer tokens than R: repeat the best one (harmless under the max over keys).
          const int64_t j = b + order[static_cast<size_t>(rr < n ? rr : 0)];
          for (int64_t g = 0; g < n_kv; ++g) {
            std::memcpy(&w.representative[static_cast<size_t>(((li * R + rr) * n_kv + g) * hd)],
                        Row(k, j, g), static_cast<size_t>(hd) * sizeof(float));
          }
        }
      }
    }
    out.push_back(std::move(w));
  }
  return out;
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
  Status observer_status;
  fo.observer = [&](const model::Intermediate& im) {
    if (im.name != "q_pre_rope" || !observer_status.ok()) return;
    auto it = std::lower_bound(layers_.begin(), layers_.end(), im.layer);
    if (it == layers_.end() || *it != im.layer) return;
    const int64_t li = it - layers_.begin();
    Tensor q = im.value;  // [T, n_head, hd]
    if (!q.device().is_cpu()) {  // a device backend: average on the host
      auto host = CopyToHost(*model_->backend(), q);
      if (!host.ok()) {
        observer_status = host.status();
        return;
      }
      q = *std::move(host);
    }
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
  RETURN_IF_ERROR(observer_status);
  if (options_.position == ContextPosition::kConstant) {
    // Memory is scored with queries rotated at the local window length; rotation is linear, so
    // rotating the mean equals the mean of the rotated queries.
    ASSIGN_OR_RETURN(Tensor t, Tensor::FromVector(Shape{L, n_head, hd}, mean));
    ASSIGN_OR_RETURN(Tensor pos, Tensor::Empty(DType::kI32, Shape{L}));
    for (int64_t i = 0; i < L; ++i) pos.data_as<int32_t>()[i] = static_cast<int32_t>(local_window_);
    Backend* backend = model_->backend();
    if (backend->device().is_cpu()) {
      RETURN_IF_ERROR(backend->Rope(t, pos, cfg.rope, &t));
    } else {  // a device backend rotates device tensors only
      ASSIGN_OR_RETURN(Tensor d, backend->Allocate(DType::kF32, t.shape()));
      RETURN_IF_ERROR(backend->Transfer(t, &d));
      RETURN_IF_ERROR(backend->Rope(d, pos, cfg.rope, &d));
      RETURN_IF_ERROR(backend->Transfer(d, &t));
    }
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
                                               std::span<const model::TokenId> query,
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
      if (c.position < sink_tokens() && docs.count(c.doc_id) > 0) s.push_back(id);
    }
    std::sort(s.begin(), s.end());
    return s;
  };
  std::vector<memory::ChunkId> sinks =
      sinks_of(std::set<memory::DocumentId>(filter.doc_ids.begin(), filter.doc_ids.end()));

  std::vector<memory::SearchHit> scored;
  std::vector<std::vector<memory::ChunkId>> per_layer;
  if (options_.selection == ChunkSelection::kEmbedder) {
    ASSIGN_OR_RETURN(per_layer, SelectByEmbedder(query_text, query, filter, sinks, &scored));
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
    ASSIGN_OR_RETURN(per_layer, SelectByRepresentativeKeys(query, filter, sinks));
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
        len = std::min(len, std::max<int64_t>(0, sink_tokens() - info.at(id).position));
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
          const int64_t row = bank_index_[static_cast<size_t>(li)] * n_kv + g;
          std::memcpy(k.data_as<float>() + (m * n_kv + g) * hd, Row(kv.k, row, off + t),
                      static_cast<size_t>(hd) * sizeof(float));
          std::memcpy(v.data_as<float>() + (m * n_kv + g) * hd, Row(kv.v, row, off + t),
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
        ASSIGN_OR_RETURN(
            lm.k, model::RotateMemoryKeys(model_->LayerBackend(layers_[static_cast<size_t>(li)]),
                                          cfg.rope, k, -M));
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
