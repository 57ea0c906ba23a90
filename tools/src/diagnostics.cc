#include "muninn/tools/diagnostics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "muninn/core/check.h"
#include "muninn/core/cpu_backend.h"
#include "muninn/model/memory_placement.h"
#include "muninn/model/sampler.h"

namespace muninn::tools {
namespace {

// Copies a host f32 tensor's values (any layout) in row-major order.
StatusOr<std::vector<float>> Values(const Tensor& t) {
  if (t.dtype() != DType::kF32) return InvalidArgumentError("diagnostics read f32 tensors only");
  ASSIGN_OR_RETURN(Tensor c, t.Contiguous());
  return std::vector<float>(c.data_as<float>(), c.data_as<float>() + c.numel());
}

int64_t ArgMax(std::span<const float> row) {
  return std::max_element(row.begin(), row.end()) - row.begin();
}

}  // namespace

// ---- loss delta by position ----------------------------------------------------------------

StatusOr<std::vector<LossBucket>> LossDeltaByPosition(const std::vector<std::vector<float>>& memory,
                                                      const std::vector<std::vector<float>>& none,
                                                      int64_t n_buckets) {
  if (memory.empty() || memory.size() != none.size()) {
    return InvalidArgumentError("loss by position needs the same (non-zero) number of windows with "
                                "and without memory");
  }
  const size_t n = memory[0].size();
  for (size_t w = 0; w < memory.size(); ++w) {
    if (memory[w].size() != n || none[w].size() != n) {
      return InvalidArgumentError("loss by position: window " + std::to_string(w) +
                                  " has a different number of scored tokens");
    }
  }
  if (n == 0 || n_buckets < 1) return InvalidArgumentError("loss by position needs tokens and buckets >= 1");
  const int64_t b_count = std::min<int64_t>(n_buckets, static_cast<int64_t>(n));
  std::vector<LossBucket> out(static_cast<size_t>(b_count));
  for (int64_t b = 0; b < b_count; ++b) {
    LossBucket& lb = out[static_cast<size_t>(b)];
    lb.first = b * static_cast<int64_t>(n) / b_count;
    lb.end = (b + 1) * static_cast<int64_t>(n) / b_count;
    double sm = 0.0, sn = 0.0;
    for (size_t w = 0; w < memory.size(); ++w) {
      for (int64_t i = lb.first; i < lb.end; ++i) {
        sm -= memory[w][static_cast<size_t>(i)];
        sn -= none[w][static_cast<size_t>(i)];
      }
    }
    const double cnt = static_cast<double>((lb.end - lb.first) * static_cast<int64_t>(memory.size()));
    lb.nll_memory = sm / cnt;
    lb.nll_none = sn / cnt;
  }
  return out;
}

StatusOr<LossRuns> RunLossRuns(retriever::LongContextSession& memory_session,
                               retriever::LongContextSession& plain_session, std::string_view text,
                               const PerplexityOptions& options) {
  PerplexityOptions o = options;
  o.keep_logprobs = true;
  o.full_attention = false;
  ASSIGN_OR_RETURN(PerplexityResult r, RunPerplexity(memory_session, plain_session, text, o));
  return LossRuns{std::move(r.logprobs_memory), std::move(r.logprobs_sliding)};
}

// ---- attention recomputation ---------------------------------------------------------------

AttentionTrace::AttentionTrace(const model::ModelConfig& config, std::vector<int32_t> layers,
                               Backend* device)
    : config_(config), layers_(std::move(layers)), data_(layers_.size()), device_(device) {}

const AttentionTrace::Layer* AttentionTrace::Find(int32_t layer) const {
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (layers_[i] == layer) return &data_[i];
  }
  return nullptr;
}

model::ForwardObserver AttentionTrace::observer() {
  return [this](const model::Intermediate& im) {
    if (im.layer < 0) return;
    const auto it = std::find(layers_.begin(), layers_.end(), im.layer);
    if (it == layers_.end()) return;
    Layer& L = data_[static_cast<size_t>(it - layers_.begin())];
    std::vector<float>* dst = nullptr;
    if (im.name == "q") dst = &L.q;
    else if (im.name == "k_pre_rope") dst = &L.k;
    else if (im.name == "v") dst = &L.v;
    else if (im.name == "attn_out") dst = &L.attn_out;
    if (dst == nullptr || !status_.ok()) return;
    Tensor host = im.value;
    if (!host.device().is_cpu()) {
      if (device_ == nullptr) {
        status_ = FailedPreconditionError("AttentionTrace: layer " + std::to_string(im.layer) +
                                          " '" + std::string(im.name) + "' is on " +
                                          host.device().ToString() +
                                          " and the trace has no backend to copy it from");
        return;
      }
      auto copied = CopyToHost(*device_, im.value);
      if (!copied.ok()) {
        status_ = copied.status().WithContext("AttentionTrace: copying an intermediate");
        return;
      }
      host = std::move(copied).value();
    }
    auto vals = Values(host);
    if (!vals.ok()) {
      status_ = vals.status();
      return;
    }
    dst->insert(dst->end(), vals->begin(), vals->end());
  };
}

int64_t AttentionTrace::n_rows() const {
  if (data_.empty()) return 0;
  return static_cast<int64_t>(data_[0].k.size()) / (config_.n_head_kv * config_.head_dim);
}

std::span<const float> AttentionTrace::attn_out(int32_t layer, int64_t row) const {
  const Layer* L = Find(layer);
  MUNINN_CHECK(L != nullptr);
  const size_t at = static_cast<size_t>(row * config_.n_embd);
  MUNINN_CHECK(at + static_cast<size_t>(config_.n_embd) <= L->attn_out.size());
  return std::span<const float>(L->attn_out).subspan(at, static_cast<size_t>(config_.n_embd));
}

StatusOr<std::vector<double>> AttentionTrace::Probabilities(Backend& backend, int32_t layer,
                                                            int64_t row, const Tensor& mem_k) const {
  const Layer* L = Find(layer);
  if (L == nullptr) return InvalidArgumentError("layer " + std::to_string(layer) + " was not traced");
  const int64_t hd = config_.head_dim, n_head = config_.n_head, n_kv = config_.n_head_kv;
  if (row < 0 || row >= n_rows()) return InvalidArgumentError("row " + std::to_string(row) + " was not traced");
  std::vector<float> mk;
  int64_t m = 0;
  if (mem_k.defined()) {
    if (mem_k.ndim() != 3 || mem_k.dim(1) != n_kv || mem_k.dim(2) != hd) {
      return InvalidArgumentError("memory K must be [M, n_head_kv, head_dim], got " + mem_k.DebugString());
    }
    ASSIGN_OR_RETURN(mk, Values(mem_k));
    m = mem_k.dim(0);
  }
  // Local keys 0..row rotated at their positions, as the cache holds them.
  const int64_t s = row + 1;
  ASSIGN_OR_RETURN(Tensor keys, Tensor::Empty(DType::kF32, Shape{s, n_kv, hd}));
  std::copy_n(L->k.data(), static_cast<size_t>(s * n_kv * hd), keys.data_as<float>());
  ASSIGN_OR_RETURN(Tensor pos, Tensor::Empty(DType::kI32, Shape{s}));
  for (int64_t i = 0; i < s; ++i) pos.data_as<int32_t>()[i] = static_cast<int32_t>(i);
  RETURN_IF_ERROR(backend.Rope(keys, pos, config_.rope, &keys));
  const float* kl = keys.data_as<float>();
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const int64_t n_keys = m + s;
  const int64_t group = n_head / n_kv;
  std::vector<double> probs(static_cast<size_t>(n_head * n_keys));
  for (int64_t h = 0; h < n_head; ++h) {
    const float* q = L->q.data() + (row * n_head + h) * hd;
    const int64_t g = h / group;
    double* p = probs.data() + h * n_keys;
    for (int64_t j = 0; j < n_keys; ++j) {
      const float* k = j < m ? mk.data() + (j * n_kv + g) * hd : kl + ((j - m) * n_kv + g) * hd;
      double dot = 0.0;
      for (int64_t c = 0; c < hd; ++c) dot += static_cast<double>(q[c]) * k[c];
      p[j] = dot * scale;
    }
    const double mx = *std::max_element(p, p + n_keys);
    double z = 0.0;
    for (int64_t j = 0; j < n_keys; ++j) z += (p[j] = std::exp(p[j] - mx));
    for (int64_t j = 0; j < n_keys; ++j) p[j] /= z;
  }
  return probs;
}

StatusOr<std::vector<float>> AttentionTrace::Output(std::span<const double> probs, int32_t layer,
                                                    int64_t row, const Tensor& mem_v) const {
  const Layer* L = Find(layer);
  if (L == nullptr) return InvalidArgumentError("layer " + std::to_string(layer) + " was not traced");
  const int64_t hd = config_.head_dim, n_head = config_.n_head, n_kv = config_.n_head_kv;
  std::vector<float> mv;
  const int64_t m = mem_v.defined() ? mem_v.dim(0) : 0;
  if (m > 0) {
    ASSIGN_OR_RETURN(mv, Values(mem_v));
  }
  const int64_t n_keys = m + row + 1;
  if (static_cast<int64_t>(probs.size()) != n_head * n_keys) {
    return InvalidArgumentError("probabilities do not match the memory and row");
  }
  const int64_t group = n_head / n_kv;
  std::vector<float> out(static_cast<size_t>(n_head * hd));
  for (int64_t h = 0; h < n_head; ++h) {
    const int64_t g = h / group;
    for (int64_t c = 0; c < hd; ++c) {
      double acc = 0.0;
      for (int64_t j = 0; j < n_keys; ++j) {
        const float v = j < m ? mv[static_cast<size_t>((j * n_kv + g) * hd + c)]
                              : L->v[static_cast<size_t>(((j - m) * n_kv + g) * hd + c)];
        acc += probs[static_cast<size_t>(h * n_keys + j)] * v;
      }
      out[static_cast<size_t>(h * hd + c)] = static_cast<float>(acc);
    }
  }
  return out;
}

std::vector<double> MassOn(std::span<const double> probs, int64_t n_head, int64_t n_keys,
                           std::span<const std::pair<int64_t, int64_t>> ranges) {
  MUNINN_CHECK(static_cast<int64_t>(probs.size()) == n_head * n_keys);
  std::vector<double> out(static_cast<size_t>(n_head), 0.0);
  for (int64_t h = 0; h < n_head; ++h) {
    for (const auto& [first, end] : ranges) {
      for (int64_t j = std::max<int64_t>(0, first); j < std::min(end, n_keys); ++j) {
        out[static_cast<size_t>(h)] += probs[static_cast<size_t>(h * n_keys + j)];
      }
    }
  }
  return out;
}

std::vector<std::pair<int64_t, int64_t>> TokenSpansOf(const model::Tokenizer& tokenizer,
                                                      std::span<const model::TokenId> ids,
                                                      std::string_view needle) {
  std::string text;
  std::vector<size_t> start(ids.size() + 1);
  for (size_t i = 0; i < ids.size(); ++i) {
    start[i] = text.size();
    text += tokenizer.Decode(ids.subspan(i, 1));
  }
  start[ids.size()] = text.size();
  std::vector<std::pair<int64_t, int64_t>> spans;
  if (needle.empty()) return spans;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    const size_t end = at + needle.size();
    int64_t first = -1, last = -1;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (start[i + 1] > at && start[i] < end) {
        if (first < 0) first = static_cast<int64_t>(i);
        last = static_cast<int64_t>(i);
      }
    }
    if (first >= 0) spans.emplace_back(first, last + 1);
  }
  return spans;
}

// ---- memory mass on a passkey prompt -------------------------------------------------------

namespace {

struct MemorySet {
  Tensor k, v;  // [M, n_head_kv, hd] f32 host, undefined when empty
  std::pair<int64_t, int64_t> gold{0, 0};  // token range of the gold chunk inside memory
};

// `host`: a CPU backend for the work on host tensors (the bank's K/V, the traced rows), whatever
// the model's device.
StatusOr<MemorySet> FetchMemory(Backend& host, const retriever::LongContextSession& session,
                                std::vector<memory::ChunkId> ids, memory::ChunkId gold) {
  MemorySet set;
  if (ids.empty()) return set;
  std::sort(ids.begin(), ids.end());
  ASSIGN_OR_RETURN(memory::FetchedKV kv, session.bank()->FetchKV(ids, DType::kF32));
  ASSIGN_OR_RETURN(Tensor k, kv.k.Transpose(0, 1));
  ASSIGN_OR_RETURN(set.k, k.Contiguous());
  ASSIGN_OR_RETURN(Tensor v, kv.v.Transpose(0, 1));
  ASSIGN_OR_RETURN(set.v, v.Contiguous());
  int64_t off = 0;
  for (size_t i = 0; i < kv.ids.size(); ++i) {
    if (kv.ids[i] == gold) set.gold = {off, off + kv.lengths[i]};
    off += kv.lengths[i];
  }
  if (session.options().memory_position == retriever::MemoryPosition::kBeforeWindow) {
    // As the session places them: memory token i of M at position i - M.
    const int64_t m = set.k.dim(0);
    ASSIGN_OR_RETURN(Tensor pos, Tensor::Empty(DType::kI32, Shape{m}));
    for (int64_t i = 0; i < m; ++i) pos.data_as<int32_t>()[i] = static_cast<int32_t>(i - m);
    RETURN_IF_ERROR(host.Rope(set.k, pos, session.model()->config().rope, &set.k));
  }
  return set;
}

StatusOr<std::vector<HeadMass>> MassFor(Backend& host, retriever::LongContextSession& session,
                                        std::span<const model::TokenId> window,
                                        const MemorySet& set, int64_t query_rows) {
  model::Model& m = *session.model();
  const std::vector<int32_t>& layers = session.options().retrieval_layers;
  AttentionTrace trace(m.config(), layers, m.backend());
  model::MemoryKV mem;
  if (set.k.defined()) {
    for (int32_t l : layers) {
      if (mem.layers.size() <= static_cast<size_t>(l)) mem.layers.resize(static_cast<size_t>(l) + 1);
      mem.layers[static_cast<size_t>(l)] = model::LayerMemoryKV{set.k, set.v};
    }
  }
  model::KvCacheOptions kvo;
  kvo.n_ctx = static_cast<int64_t>(window.size());
  kvo.dtype = DType::kF32;
  ASSIGN_OR_RETURN(auto cache, m.NewKvCache(kvo));
  model::ForwardOptions fo;
  // On a device the host K/V are copied there first (the session does the same per retrieval).
  model::MemoryPlacement placement(m);
  ASSIGN_OR_RETURN(model::MemoryKV placed, placement.Place(mem));
  fo.memory = placed.layers.empty() ? nullptr : &placed;
  fo.observer = trace.observer();
  RETURN_IF_ERROR(m.Forward(window, cache.get(), fo).status());
  RETURN_IF_ERROR(trace.status());
  const int64_t n_head = m.config().n_head;
  const int64_t M = set.k.defined() ? set.k.dim(0) : 0;
  const int64_t T = static_cast<int64_t>(window.size());
  const int64_t first_row = std::max<int64_t>(0, T - query_rows);
  std::vector<HeadMass> out;
  for (int32_t l : layers) {
    std::vector<double> mem_mass(static_cast<size_t>(n_head)), gold_mass(static_cast<size_t>(n_head));
    for (int64_t r = first_row; r < T; ++r) {
      ASSIGN_OR_RETURN(auto probs, trace.Probabilities(host, l, r, set.k));
      const std::pair<int64_t, int64_t> all{0, M};
      const auto a = MassOn(probs, n_head, M + r + 1, std::span(&all, 1));
      const auto g = MassOn(probs, n_head, M + r + 1, std::span(&set.gold, 1));
      for (int64_t h = 0; h < n_head; ++h) {
        mem_mass[static_cast<size_t>(h)] += a[static_cast<size_t>(h)] / static_cast<double>(T - first_row);
        gold_mass[static_cast<size_t>(h)] += g[static_cast<size_t>(h)] / static_cast<double>(T - first_row);
      }
    }
    for (int64_t h = 0; h < n_head; ++h) {
      out.push_back({l, static_cast<int32_t>(h), mem_mass[static_cast<size_t>(h)],
                     gold_mass[static_cast<size_t>(h)]});
    }
  }
  return out;
}

}  // namespace

StatusOr<MemoryMassResult> RunMemoryMass(retriever::LongContextSession& session,
                                         const MemoryMassOptions& options) {
  if (!session.options().has(retriever::kModeMemLong) || session.bank() == nullptr) {
    return InvalidArgumentError("the memory-mass diagnostic reads MemLong memory; run it with "
                                "--memory-mode memlong");
  }
  if (session.options().retrieval_layers.empty()) {
    return InvalidArgumentError("the memory-mass diagnostic needs retrieval layers");
  }
  if (options.query_rows < 1) return InvalidArgumentError("query_rows must be >= 1");
  const model::Tokenizer& tok = *session.tokenizer();
  ASSIGN_OR_RETURN(PasskeyPrompt p, BuildPasskeyPrompt(tok, options.length, options.depth,
                                                       options.local_tokens, options.seed));
  const std::vector<model::TokenId> prefix = tok.Encode(p.prefix_text, false, false);
  std::vector<model::TokenId> window = tok.Encode(p.window_text, false, false);
  if (prefix.empty()) {
    return InvalidArgumentError("the whole passkey prompt fits the window; raise --length above "
                                "--local-tokens so that the key lands in memory");
  }
  if (static_cast<int64_t>(window.size()) > session.options().local_window) {
    window.erase(window.begin(), window.end() - session.options().local_window);
  }
  RETURN_IF_ERROR(session.IngestTokens(1, prefix, 0).status());
  const size_t q = std::min<size_t>(window.size(), 32);
  const std::string query =
      tok.Decode(std::span<const model::TokenId>(window).subspan(window.size() - q), true);
  RETURN_IF_ERROR(session.Begin(window, query));
  memory::ChunkId gold = 0;
  for (const memory::ChunkInfo& c : session.bank()->ListChunks()) {
    ASSIGN_OR_RETURN(memory::ChunkRecord rec, session.bank()->GetChunk(c.id));
    if (rec.text.find(p.key) != std::string::npos) {
      gold = c.id;
      break;
    }
  }
  if (gold == 0) return InternalError("no stored chunk holds the whole key " + p.key);
  MemoryMassResult r;
  std::vector<memory::ChunkId> with, without;
  for (const auto& h : session.retrieved().hits) {
    if (h.id == gold) r.gold_retrieved = true;
    else without.push_back(h.id);
  }
  with = without;
  with.push_back(gold);
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> host, CreateCpuBackend(CpuBackendOptions{}));
  ASSIGN_OR_RETURN(MemorySet set_with, FetchMemory(*host, session, with, gold));
  ASSIGN_OR_RETURN(MemorySet set_without, FetchMemory(*host, session, without, 0));
  r.memory_tokens_with = set_with.k.defined() ? set_with.k.dim(0) : 0;
  r.memory_tokens_without = set_without.k.defined() ? set_without.k.dim(0) : 0;
  ASSIGN_OR_RETURN(r.with_gold, MassFor(*host, session, window, set_with, options.query_rows));
  ASSIGN_OR_RETURN(r.without_gold,
                   MassFor(*host, session, window, set_without, options.query_rows));
  return r;
}

// ---- retrieval heads ----------------------------------------------------------------------

StatusOr<RetrievalHeadResult> RunRetrievalHeads(model::Model& model,
                                                const model::Tokenizer& tokenizer,
                                                const RetrievalHeadOptions& options) {
  if (options.depths.empty()) return InvalidArgumentError("retrieval heads need at least one depth");
  if (options.max_answer_tokens < 1) return InvalidArgumentError("max_answer_tokens must be >= 1");
  const model::ModelConfig& cfg = model.config();
  std::vector<int32_t> layers(static_cast<size_t>(cfg.n_layer));
  for (int32_t l = 0; l < cfg.n_layer; ++l) layers[static_cast<size_t>(l)] = l;
  const int64_t n_head = cfg.n_head;
  std::vector<double> key_mass(static_cast<size_t>(cfg.n_layer * n_head), 0.0);
  std::vector<double> copies(key_mass.size(), 0.0);
  RetrievalHeadResult result;
  uint64_t seed = options.seed;
  // The traced rows are copied to the host; the probabilities are recomputed there.
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> host, CreateCpuBackend(CpuBackendOptions{}));
  for (double depth : options.depths) {
    ASSIGN_OR_RETURN(PasskeyPrompt p, BuildPasskeyPrompt(tokenizer, options.length, depth,
                                                         options.length + 1024, seed++));
    std::vector<model::TokenId> ids = tokenizer.Encode(p.prefix_text + p.window_text, false, false);
    const auto key_spans = TokenSpansOf(tokenizer, ids, p.key);
    if (key_spans.empty()) return InternalError("the key's tokens were not found in the prompt");
    AttentionTrace trace(cfg, layers, model.backend());
    model::KvCacheOptions kvo;
    kvo.n_ctx = static_cast<int64_t>(ids.size()) + options.max_answer_tokens;
    kvo.dtype = DType::kF32;
    ASSIGN_OR_RETURN(auto cache, model.NewKvCache(kvo));
    model::ForwardOptions fo;
    fo.observer = trace.observer();
    ASSIGN_OR_RETURN(model::ForwardResult fr, model.Forward(ids, cache.get(), fo));
    RETURN_IF_ERROR(trace.status());
    std::vector<model::TokenId> answer;
    int64_t row = static_cast<int64_t>(ids.size()) - 1;
    for (int64_t step = 0; step < options.max_answer_tokens; ++step) {
      const float* lg = fr.logits.data_as<float>() + (fr.logits.dim(0) - 1) * fr.logits.dim(-1);
      const model::TokenId next = static_cast<model::TokenId>(
          ArgMax(std::span<const float>(lg, static_cast<size_t>(fr.logits.dim(-1)))));
      if (tokenizer.IsEog(next) || next == tokenizer.eos_id()) break;
      const std::string piece = tokenizer.Decode(std::span<const model::TokenId>(&next, 1));
      const bool digit = std::any_of(piece.begin(), piece.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (digit) {
        ++result.digit_steps;
        for (int32_t l = 0; l < cfg.n_layer; ++l) {
          ASSIGN_OR_RETURN(auto probs, trace.Probabilities(*host, l, row, Tensor{}));
          const int64_t n_keys = row + 1;
          const auto mass = MassOn(probs, n_head, n_keys, key_spans);
          for (int64_t h = 0; h < n_head; ++h) {
            const size_t at = static_cast<size_t>(l * n_head + h);
            key_mass[at] += mass[static_cast<size_t>(h)];
            const double* ph = probs.data() + h * n_keys;
            const int64_t top = std::max_element(ph, ph + n_keys) - ph;
            bool in_key = false;
            for (const auto& [a, b] : key_spans) in_key = in_key || (top >= a && top < b);
            if (in_key && ids[static_cast<size_t>(top)] == next) copies[at] += 1.0;
          }
        }
      }
      answer.push_back(next);
      ids.push_back(next);
      if (step + 1 == options.max_answer_tokens) break;
      ASSIGN_OR_RETURN(fr, model.Forward(std::span<const model::TokenId>(&next, 1), cache.get(), fo));
      RETURN_IF_ERROR(trace.status());
      ++row;
    }
    ++result.trials;
    if (tokenizer.Decode(answer).find(p.key) != std::string::npos) ++result.passed;
  }
  const double steps = std::max<double>(1.0, static_cast<double>(result.digit_steps));
  for (int32_t l = 0; l < cfg.n_layer; ++l) {
    for (int64_t h = 0; h < n_head; ++h) {
      const size_t at = static_cast<size_t>(l * n_head + h);
      result.heads.push_back({l, static_cast<int32_t>(h), key_mass[at] / steps, copies[at] / steps});
    }
  }
  std::stable_sort(result.heads.begin(), result.heads.end(), [](const HeadScore& a, const HeadScore& b) {
    return a.copy_score != b.copy_score ? a.copy_score > b.copy_score : a.key_mass > b.key_mass;
  });
  return result;
}

// ---- JSON ---------------------------------------------------------------------------------

nlohmann::json ToJson(const std::vector<LossBucket>& buckets) {
  nlohmann::json arr = nlohmann::json::array();
  for (const LossBucket& b : buckets) {
    arr.push_back({{"first", b.first}, {"end", b.end}, {"nll_memory", b.nll_memory},
                   {"nll_none", b.nll_none}, {"delta", b.delta()}});
  }
  return arr;
}

namespace {

nlohmann::json HeadsJson(const std::vector<HeadMass>& heads) {
  // Per layer: the heads' masses as arrays, and their mean.
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < heads.size();) {
    const int32_t l = heads[i].layer;
    nlohmann::json mem = nlohmann::json::array(), gold = nlohmann::json::array();
    double sm = 0.0, sg = 0.0;
    int n = 0;
    for (; i < heads.size() && heads[i].layer == l; ++i, ++n) {
      mem.push_back(heads[i].memory);
      gold.push_back(heads[i].gold);
      sm += heads[i].memory;
      sg += heads[i].gold;
    }
    out.push_back({{"layer", l}, {"memory_mass_per_head", mem}, {"gold_mass_per_head", gold},
                   {"memory_mass_mean", sm / n}, {"gold_mass_mean", sg / n}});
  }
  return out;
}

}  // namespace

nlohmann::json ToJson(const MemoryMassResult& r) {
  return {{"gold_retrieved", r.gold_retrieved},
          {"memory_tokens_with_gold", r.memory_tokens_with},
          {"memory_tokens_without_gold", r.memory_tokens_without},
          {"with_gold", HeadsJson(r.with_gold)},
          {"without_gold", HeadsJson(r.without_gold)}};
}

nlohmann::json ToJson(const RetrievalHeadResult& r, int64_t top) {
  nlohmann::json heads = nlohmann::json::array();
  for (size_t i = 0; i < r.heads.size() && static_cast<int64_t>(i) < top; ++i) {
    const HeadScore& h = r.heads[i];
    heads.push_back({{"layer", h.layer}, {"head", h.head}, {"copy_score", h.copy_score},
                     {"key_mass", h.key_mass}});
  }
  int64_t above = 0;
  for (const HeadScore& h : r.heads) above += h.copy_score >= 0.1 ? 1 : 0;
  return {{"trials", r.trials}, {"passed", r.passed}, {"digit_steps", r.digit_steps},
          {"heads_total", r.heads.size()}, {"heads_copy_score_ge_0.1", above}, {"top_heads", heads}};
}

}  // namespace muninn::tools
