// The training forward/backward of a llama model with LoRA (contract in train_model.h). Buffers
// are packed row-major f32 host arrays; shapes in comments use T tokens, E = n_embd,
// Q = n_head·hd, K = n_head_kv·hd, F = n_ff, R = LoRA rank.
#include "muninn/model/train_model.h"

#include <cblas.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "muninn/core/attention_backward.h"
#include "muninn/core/backward.h"
#include "train/bottom_cache.h"

namespace muninn::model {

namespace {

blasint B(int64_t x) { return static_cast<blasint>(x); }

// y[m, n_out] = x[m, n_in] · w[n_out, n_in]ᵀ
void Linear(const float* x, const float* w, int64_t m, int64_t n_out, int64_t n_in, float* y) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B(m), B(n_out), B(n_in), 1.0f, x, B(n_in), w,
              B(n_in), 0.0f, y, B(n_out));
}

// y = x / sqrt(mean(x²) + eps) · w per row (Backend::RmsNorm's definition).
void RmsNormForward(const float* x, const float* w, int64_t rows, int64_t d, float eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    double ss = 0.0;
    for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const auto rstd = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(d) + eps));
    for (int64_t i = 0; i < d; ++i) yr[i] = xr[i] * rstd * w[i];
  }
}

void Add(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

uint64_t DropoutSeed(uint64_t seed, int32_t layer, LoraTarget t) {
  uint64_t z = seed ^ (0x9E3779B97F4A7C15ull *
                       (static_cast<uint64_t>(layer) * 16 + static_cast<uint64_t>(t) + 1));
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

bool SameLayout(const LoraConfig& a, const LoraConfig& b) {
  return a.rank == b.rank && a.first_layer == b.first_layer && a.train_norms == b.train_norms &&
         a.memory_gate_layers == b.memory_gate_layers && a.targets.size() == b.targets.size() &&
         std::all_of(a.targets.begin(), a.targets.end(),
                     [&](LoraTarget t) { return b.Targets(t); });
}

// The attention shape of one trained layer over a block of T tokens (causal, S = T), with the
// memory block's M keys when the layer reads memory; the forward and the backward share it.
AttentionTrainDims LayerAttentionDims(const ModelConfig& mc, int64_t T, const LayerMemoryKV* mem) {
  AttentionTrainDims ad;
  ad.T = T;
  ad.S = T;
  ad.M = mem != nullptr ? mem->k.dim(0) : 0;
  ad.n_head = mc.n_head;
  ad.n_head_kv = mc.n_head_kv;
  ad.d = mc.head_dim;
  ad.dv = mc.head_dim;
  ad.causal = true;
  return ad;
}

}  // namespace

// Frozen f32 copies of the trained layers' matrices and of the head.
struct TrainModel::Weights {
  struct Layer {
    std::array<Tensor, kNumLoraTargets> w;  // indexed by LoraTarget: [n_out, n_in] f32
  };
  std::vector<Layer> layers;  // [n_layer - first_layer]
  Tensor head;                // [n_vocab, n_embd] f32
};

// What one trained layer's backward needs from its forward.
struct TrainModel::LayerActs {
  int64_t T = 0;
  std::vector<float> h_in;   // [T, E] layer input
  std::vector<float> x1;     // [T, E] attn_norm output
  Tensor q;                  // [T, n_head, hd] after RoPE
  Tensor k;                  // [T, n_head_kv, hd] after RoPE
  std::vector<float> v;      // [T, K]
  Tensor mq;                 // [T, n_head, hd] memory queries (query_position mode), or undefined
  std::vector<float> att;    // [T, Q] attention output
  std::vector<float> lse;    // [T, n_head]
  std::vector<float> h_mid;  // [T, E] after the attention residual
  std::vector<float> x2;     // [T, E] ffn_norm output
  std::vector<float> gate;   // [T, F] before SwiGLU
  std::vector<float> up;     // [T, F]
  std::vector<float> act;    // [T, F] silu(gate)·up
  std::array<std::vector<float>, kNumLoraTargets> u;  // [T, R] x·Aᵀ per trained target
};

struct TrainModel::Scratch {
  int64_t T = 0;
  Tensor pos;                                // [T] i32 positions
  Tensor mpos;                               // [T] i32 the memory queries' position
  std::vector<LayerActs> acts;               // per trained layer, or one (recompute / loss only)
  std::vector<std::vector<float>> inputs;    // recompute: each trained layer's input [T, E]
  std::vector<float> h;                      // [T, E] residual stream
  std::vector<float> hn;                     // [T, E] output_norm(h)
  std::vector<float> dh;                     // [T, E]
  std::vector<float> dtmp;                   // [T, E]
  std::vector<float> dx;                     // [T, max(E, Q, F)]
  std::vector<float> xd;                     // [T, max(E, Q, F)] dropped-out LoRA input
  std::vector<float> dq, dk, dv, dmq, datt;  // [T, Q] / [T, K]
  std::vector<float> dgate, dup, dact;       // [T, F]
};

TrainModel::TrainModel(Model* model, const LoraConfig& config, const TrainModelOptions& options)
    : model_(model), lora_(config), options_(options) {}

TrainModel::~TrainModel() = default;

StatusOr<std::unique_ptr<TrainModel>> TrainModel::Create(Model* model, const LoraConfig& config,
                                                         const TrainModelOptions& options) {
  MUNINN_CHECK(model != nullptr);
  const ModelConfig& mc = model->config();
  RETURN_IF_ERROR(config.Validate(mc));
  if (!model->backend()->device().is_cpu()) {
    return UnimplementedError(
        "training runs on the CPU backend only; load the model without "
        "a GPU backend");
  }
  if (model->is_recurrent()) {
    return UnimplementedError("training a recurrent-depth model (Huginn) is not supported");
  }
  if (options.ce_rows_per_block < 1 || options.ce_vocab_block < 1) {
    return InvalidArgumentError("cross-entropy block sizes must be >= 1");
  }
  const ModelWeights& mw = model->weights();
  for (int32_t l = 0; l < mc.n_layer; ++l) {
    const LayerWeights& lw = mw.layers[static_cast<size_t>(l)];
    if (lw.type != BlockType::kLlama || lw.q_bias.defined() || lw.k_bias.defined()) {
      return UnimplementedError("layer " + std::to_string(l) +
                                " is not a plain llama block (sandwich norms or q/k biases); "
                                "training supports llama blocks only");
    }
    if (l >= config.first_layer && !lw.mem_bias.empty()) {
      return UnimplementedError("layer " + std::to_string(l) +
                                " already has memory gates (an adapter with gates was merged "
                                "into the model); train on the base model");
    }
  }
  std::unique_ptr<TrainModel> tm(new TrainModel(model, config, options));
  tm->weights_ = std::make_unique<Weights>();
  for (int32_t l = config.first_layer; l < mc.n_layer; ++l) {
    const LayerWeights& lw = mw.layers[static_cast<size_t>(l)];
    Weights::Layer wl;
    const Tensor* src[kNumLoraTargets] = {&lw.wq,     &lw.wk,   &lw.wv,    &lw.wo,
                                          &lw.w_gate, &lw.w_up, &lw.w_down};
    for (int t = 0; t < kNumLoraTargets; ++t) {
      auto w = DequantizeToF32(*src[t]);
      if (!w.ok()) return w.status().WithContext("layer " + std::to_string(l));
      wl.w[static_cast<size_t>(t)] = std::move(w).value();
    }
    tm->weights_->layers.push_back(std::move(wl));
  }
  auto head = DequantizeToF32(mw.output);
  if (!head.ok()) return head.status().WithContext("output head");
  tm->weights_->head = std::move(head).value();
  if (!options.bottom_cache_dir.empty()) {
    auto c = train::BottomCache::Open(options.bottom_cache_dir, *model, config.first_layer);
    if (!c.ok()) return c.status();
    tm->cache_ = std::make_unique<train::BottomCache>(std::move(c).value());
  }
  tm->scratch_ = std::make_unique<Scratch>();
  return tm;
}

Status TrainModel::CheckBatch(const LoraParams& params, const TrainBatch& batch) const {
  if (!SameLayout(params.config(), lora_) ||
      params.model_config().n_layer != model_->config().n_layer ||
      params.model_config().n_embd != model_->config().n_embd) {
    return InvalidArgumentError(
        "the LoRA parameters were made for another configuration than "
        "this TrainModel (rank, layers, targets, norms or memory gates differ)");
  }
  if (batch.ids.empty()) return InvalidArgumentError("a training block needs at least one token");
  if (batch.labels.size() != batch.ids.size()) {
    return InvalidArgumentError("a training block has " + std::to_string(batch.ids.size()) +
                                " tokens but " + std::to_string(batch.labels.size()) + " labels");
  }
  const int32_t n_vocab = model_->config().n_vocab;
  for (TokenId id : batch.ids) {
    if (id < 0 || id >= n_vocab) {
      return InvalidArgumentError("token id " + std::to_string(id) +
                                  " is outside the vocabulary [0, " + std::to_string(n_vocab) +
                                  ")");
    }
  }
  if (batch.start_pos < 0 ||
      batch.start_pos + static_cast<int64_t>(batch.ids.size()) > int64_t{INT32_MAX}) {
    return InvalidArgumentError("block positions must lie in [0, 2^31)");
  }
  if (batch.memory != nullptr) {
    const ModelConfig& mc = model_->config();
    for (int32_t l = lora_.first_layer; l < mc.n_layer; ++l) {
      const LayerMemoryKV* m = batch.memory->ForLayer(l);
      if (m == nullptr) continue;
      const Shape want{m->k.dim(0), mc.n_head_kv, mc.head_dim};
      for (const Tensor* t : {&m->k, &m->v}) {
        if (t->dtype() != DType::kF32 || !t->is_contiguous() || !t->device().is_cpu() ||
            !(t->shape() == want)) {
          return InvalidArgumentError("layer " + std::to_string(l) +
                                      " memory K/V for training must be contiguous f32 host "
                                      "tensors [M, n_head_kv, head_dim] of equal M, got " +
                                      t->DebugString());
        }
      }
      if (m->query_position > int64_t{INT32_MAX}) {
        return InvalidArgumentError("memory query position does not fit int32");
      }
    }
  }
  return Status::Ok();
}

BottomCacheCounts TrainModel::bottom_cache_stats() const {
  return cache_ == nullptr ? BottomCacheCounts{} : cache_->stats();
}

Status TrainModel::BottomForward(const TrainBatch& batch, std::vector<float>* h) {
  if (cache_ == nullptr || lora_.first_layer == 0) return ComputeBottom(batch, h);
  // Cacheable when no frozen layer reads memory: the output depends on the block alone.
  bool reads_memory = false;
  for (int32_t l = 0; l < lora_.first_layer && batch.memory != nullptr; ++l) {
    reads_memory = reads_memory || batch.memory->ForLayer(l) != nullptr;
  }
  if (reads_memory) {
    cache_->CountSkipped();
    return ComputeBottom(batch, h);
  }
  if (cache_->Read(batch.start_pos, batch.ids, h)) return Status::Ok();
  RETURN_IF_ERROR(ComputeBottom(batch, h));
  // A cache that cannot be written (disk full) must not stop a training run: the cache counts
  // the failure (bottom_cache_stats), training goes on.
  cache_->Write(batch.start_pos, batch.ids, *h).IgnoreError();
  return Status::Ok();
}

Status TrainModel::ComputeBottom(const TrainBatch& batch, std::vector<float>* h) {
  const ModelConfig& mc = model_->config();
  const int64_t T = static_cast<int64_t>(batch.ids.size());
  h->resize(static_cast<size_t>(T * mc.n_embd));
  if (lora_.first_layer == 0) {
    ASSIGN_OR_RETURN(Tensor ids, Tensor::Empty(DType::kI32, Shape{T}));
    std::copy(batch.ids.begin(), batch.ids.end(), ids.data_as<int32_t>());
    ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(DType::kF32, Shape{T, mc.n_embd}));
    RETURN_IF_ERROR(model_->backend()->GetRows(model_->weights().tok_embd, ids, &out));
    const float* o = out.data_as<const float>();
    for (size_t i = 0; i < h->size(); ++i) (*h)[i] = o[i] * mc.embd_scale;
    return Status::Ok();
  }
  ForwardOptions fo;
  fo.memory = batch.memory;
  fo.compute_logits = false;
  fo.start_pos = batch.start_pos;
  fo.last_layer = lora_.first_layer - 1;
  bool got = false;
  fo.observer = [&](const Intermediate& im) {
    if (im.layer != fo.last_layer || im.name != "hidden") return;
    MUNINN_CHECK(im.value.is_contiguous() && im.value.dtype() == DType::kF32);
    std::memcpy(h->data(), im.value.data(), h->size() * sizeof(float));
    got = true;
  };
  auto r = model_->Forward(batch.ids, nullptr, fo);
  if (!r.ok()) return r.status().WithContext("frozen layers' forward");
  MUNINN_CHECK(got) << "the frozen forward did not report layer " << fo.last_layer << "'s output";
  return Status::Ok();
}

Status TrainModel::LayerForward(int32_t layer, const LoraParams& params, const TrainBatch& batch,
                                bool train, const float* h_in, LayerActs* a, float* h_out) {
  const ModelConfig& mc = model_->config();
  Scratch& s = *scratch_;
  const int64_t T = static_cast<int64_t>(batch.ids.size());
  const int64_t E = mc.n_embd, hd = mc.head_dim, F = mc.n_ff;
  const int64_t Q = int64_t{mc.n_head} * hd, K = int64_t{mc.n_head_kv} * hd;
  const Weights::Layer& W = weights_->layers[static_cast<size_t>(layer - lora_.first_layer)];
  const LayerWeights& frozen = model_->weights().layers[static_cast<size_t>(layer)];
  auto wt = [&](LoraTarget t) { return W.w[static_cast<size_t>(t)].data_as<const float>(); };
  auto norm = [&](int64_t off, const Tensor& fallback) {
    return off >= 0 ? params.values().data() + off : fallback.data_as<const float>();
  };
  // y[T, n_out] = x·Wᵀ, plus the LoRA path when t trains (u kept in a->u[t]).
  auto project = [&](LoraTarget t, const float* x, float* y) {
    const int64_t n_in = params.InDim(t), n_out = params.OutDim(t);
    Linear(x, wt(t), T, n_out, n_in, y);
    const int64_t oa = params.OffsetA(layer, t);
    if (oa < 0) return;
    LoraDims d{T,
               n_in,
               n_out,
               lora_.rank,
               lora_.scale(),
               train ? lora_.dropout : 0.0f,
               DropoutSeed(batch.dropout_seed, layer, t)};
    const float* xd = x;
    if (d.dropout > 0.0f) {
      LoraDropout(d, x, s.xd.data());
      xd = s.xd.data();
    }
    std::vector<float>& u = a->u[static_cast<size_t>(t)];
    u.resize(static_cast<size_t>(T * lora_.rank));
    LoraForward(d, xd, params.values().data() + oa,
                params.values().data() + params.OffsetB(layer, t), u.data(), y);
  };

  a->T = T;
  a->h_in.assign(h_in, h_in + T * E);
  a->x1.resize(static_cast<size_t>(T * E));
  a->v.resize(static_cast<size_t>(T * K));
  a->att.resize(static_cast<size_t>(T * Q));
  a->lse.resize(static_cast<size_t>(T * mc.n_head));
  a->h_mid.resize(static_cast<size_t>(T * E));
  a->x2.resize(static_cast<size_t>(T * E));
  a->gate.resize(static_cast<size_t>(T * F));
  a->up.resize(static_cast<size_t>(T * F));
  a->act.resize(static_cast<size_t>(T * F));
  if (!a->q.defined() || a->q.dim(0) != T) {
    ASSIGN_OR_RETURN(a->q, Tensor::Empty(DType::kF32, Shape{T, mc.n_head, hd}));
    ASSIGN_OR_RETURN(a->k, Tensor::Empty(DType::kF32, Shape{T, mc.n_head_kv, hd}));
  }

  // ---- attention ----
  RmsNormForward(h_in, norm(params.OffsetAttnNorm(layer), frozen.attn_norm), T, E, mc.norm_eps,
                 a->x1.data());
  float* q = a->q.data_as<float>();
  float* k = a->k.data_as<float>();
  project(LoraTarget::kQ, a->x1.data(), q);
  project(LoraTarget::kK, a->x1.data(), k);
  project(LoraTarget::kV, a->x1.data(), a->v.data());
  const LayerMemoryKV* mem = batch.memory != nullptr ? batch.memory->ForLayer(layer) : nullptr;
  Backend* be = model_->backend();
  const float* mem_q = nullptr;
  if (mem != nullptr && mem->query_position >= 0) {
    if (!a->mq.defined() || a->mq.dim(0) != T) {
      ASSIGN_OR_RETURN(a->mq, Tensor::Empty(DType::kF32, Shape{T, mc.n_head, hd}));
    }
    std::memcpy(a->mq.data(), q, static_cast<size_t>(T * Q) * sizeof(float));
    std::fill(s.mpos.data_as<int32_t>(), s.mpos.data_as<int32_t>() + T,
              static_cast<int32_t>(mem->query_position));
    RETURN_IF_ERROR(be->Rope(a->mq, s.mpos, mc.rope, &a->mq));
    mem_q = a->mq.data_as<const float>();
  }
  RETURN_IF_ERROR(be->Rope(a->q, s.pos, mc.rope, &a->q));
  RETURN_IF_ERROR(be->Rope(a->k, s.pos, mc.rope, &a->k));
  const AttentionTrainDims ad = LayerAttentionDims(mc, T, mem);
  const int64_t off_gate = params.OffsetMemGate(layer);
  AttentionForwardTrain(options_.pool, ad, q, k, a->v.data(), mem_q,
                        mem != nullptr ? mem->k.data_as<const float>() : nullptr,
                        mem != nullptr ? mem->v.data_as<const float>() : nullptr, a->att.data(),
                        a->lse.data(), off_gate >= 0 ? params.values().data() + off_gate : nullptr);
  project(LoraTarget::kO, a->att.data(), a->h_mid.data());
  Add(a->h_mid.data(), h_in, T * E);

  // ---- MLP ----
  RmsNormForward(a->h_mid.data(), norm(params.OffsetFfnNorm(layer), frozen.ffn_norm), T, E,
                 mc.norm_eps, a->x2.data());
  project(LoraTarget::kGate, a->x2.data(), a->gate.data());
  project(LoraTarget::kUp, a->x2.data(), a->up.data());
  for (int64_t i = 0; i < T * F; ++i) {
    const float g = a->gate[static_cast<size_t>(i)];
    a->act[static_cast<size_t>(i)] = g / (1.0f + std::exp(-g)) * a->up[static_cast<size_t>(i)];
  }
  project(LoraTarget::kDown, a->act.data(), h_out);
  Add(h_out, a->h_mid.data(), T * E);
  return Status::Ok();
}

Status TrainModel::LayerBackward(int32_t layer, const LoraParams& params, const TrainBatch& batch,
                                 const LayerActs& a, std::span<float> grads, float* dh) {
  const ModelConfig& mc = model_->config();
  Scratch& s = *scratch_;
  const int64_t T = a.T;
  const int64_t E = mc.n_embd, hd = mc.head_dim, F = mc.n_ff;
  const int64_t Q = int64_t{mc.n_head} * hd;
  const Weights::Layer& W = weights_->layers[static_cast<size_t>(layer - lora_.first_layer)];
  const LayerWeights& frozen = model_->weights().layers[static_cast<size_t>(layer)];
  const float* pv = params.values().data();
  float* g = grads.data();
  auto wt = [&](LoraTarget t) { return W.w[static_cast<size_t>(t)].data_as<const float>(); };
  // dx (+)= dy·W for target t (written when !accumulate), plus the LoRA path's dx and dA, dB.
  auto project_back = [&](LoraTarget t, const float* dy, const float* x, float* dx,
                          bool accumulate) {
    const int64_t n_in = params.InDim(t), n_out = params.OutDim(t);
    LinearBackwardInput(dy, wt(t), T, n_out, n_in, dx, accumulate);
    const int64_t oa = params.OffsetA(layer, t);
    if (oa < 0) return;
    const int64_t ob = params.OffsetB(layer, t);
    LoraDims d{T,
               n_in,
               n_out,
               lora_.rank,
               lora_.scale(),
               lora_.dropout,
               DropoutSeed(batch.dropout_seed, layer, t)};
    const float* xd = x;
    if (d.dropout > 0.0f) {
      LoraDropout(d, x, s.xd.data());
      xd = s.xd.data();
    }
    LoraBackward(d, dy, xd, a.u[static_cast<size_t>(t)].data(), pv + oa, pv + ob, g + oa, g + ob,
                 dx);
  };
  auto norm_w = [&](int64_t off, const Tensor& fallback) {
    return off >= 0 ? pv + off : fallback.data_as<const float>();
  };
  auto norm_g = [&](int64_t off) { return off >= 0 ? g + off : nullptr; };

  // ---- MLP: h_out = h_mid + down(silu(gate)·up) ----
  project_back(LoraTarget::kDown, dh, a.act.data(), s.dact.data(), false);
  SwiGluBackward(options_.pool, a.gate.data(), a.up.data(), s.dact.data(), T * F, s.dgate.data(),
                 s.dup.data());
  project_back(LoraTarget::kGate, s.dgate.data(), a.x2.data(), s.dx.data(), false);
  project_back(LoraTarget::kUp, s.dup.data(), a.x2.data(), s.dx.data(), true);
  const int64_t off_ffn = params.OffsetFfnNorm(layer);
  RmsNormBackward(options_.pool, a.h_mid.data(), norm_w(off_ffn, frozen.ffn_norm), s.dx.data(), T,
                  E, mc.norm_eps, s.dtmp.data(), norm_g(off_ffn));
  Add(dh, s.dtmp.data(), T * E);  // dh is now d(h_mid)

  // ---- attention: h_mid = h_in + o(Attention(rope(q), rope(k), v)) ----
  project_back(LoraTarget::kO, dh, a.att.data(), s.datt.data(), false);
  const LayerMemoryKV* mem = batch.memory != nullptr ? batch.memory->ForLayer(layer) : nullptr;
  const bool mem_q = a.mq.defined() && mem != nullptr && mem->query_position >= 0;
  const AttentionTrainDims ad = LayerAttentionDims(mc, T, mem);
  const int64_t off_gate = params.OffsetMemGate(layer);
  AttentionBackward(options_.pool, ad, a.q.data_as<const float>(), a.k.data_as<const float>(),
                    a.v.data(), mem_q ? a.mq.data_as<const float>() : nullptr,
                    mem != nullptr ? mem->k.data_as<const float>() : nullptr,
                    mem != nullptr ? mem->v.data_as<const float>() : nullptr, a.att.data(),
                    a.lse.data(), s.datt.data(), s.dq.data(), s.dk.data(), s.dv.data(),
                    mem_q ? s.dmq.data() : nullptr, off_gate >= 0 ? pv + off_gate : nullptr,
                    off_gate >= 0 ? g + off_gate : nullptr);
  const int32_t* pos = s.pos.data_as<const int32_t>();
  RETURN_IF_ERROR(
      RopeBackward(options_.pool, s.dq.data(), pos, T, mc.n_head, hd, mc.rope, s.dq.data()));
  RETURN_IF_ERROR(
      RopeBackward(options_.pool, s.dk.data(), pos, T, mc.n_head_kv, hd, mc.rope, s.dk.data()));
  if (mem_q) {
    RETURN_IF_ERROR(RopeBackward(options_.pool, s.dmq.data(), s.mpos.data_as<const int32_t>(), T,
                                 mc.n_head, hd, mc.rope, s.dmq.data()));
    Add(s.dq.data(), s.dmq.data(), T * Q);
  }
  project_back(LoraTarget::kQ, s.dq.data(), a.x1.data(), s.dx.data(), false);
  project_back(LoraTarget::kK, s.dk.data(), a.x1.data(), s.dx.data(), true);
  project_back(LoraTarget::kV, s.dv.data(), a.x1.data(), s.dx.data(), true);
  const int64_t off_attn = params.OffsetAttnNorm(layer);
  RmsNormBackward(options_.pool, a.h_in.data(), norm_w(off_attn, frozen.attn_norm), s.dx.data(), T,
                  E, mc.norm_eps, s.dtmp.data(), norm_g(off_attn));
  Add(dh, s.dtmp.data(), T * E);  // dh is now d(h_in)
  return Status::Ok();
}

StatusOr<CrossEntropyResult> TrainModel::Run(const LoraParams& params, const TrainBatch& batch,
                                             bool train, float grad_scale, std::span<float> grads) {
  RETURN_IF_ERROR(CheckBatch(params, batch));
  if (train && static_cast<int64_t>(grads.size()) != params.size()) {
    return InvalidArgumentError("the gradient arena has " + std::to_string(grads.size()) +
                                " floats, the parameters " + std::to_string(params.size()));
  }
  if (!(grad_scale >= 0.0f) || !std::isfinite(grad_scale)) {
    return InvalidArgumentError("grad_scale must be finite and >= 0");
  }
  const ModelConfig& mc = model_->config();
  Scratch& s = *scratch_;
  const int64_t T = static_cast<int64_t>(batch.ids.size());
  const int64_t E = mc.n_embd, F = mc.n_ff;
  const int64_t Q = int64_t{mc.n_head} * mc.head_dim, K = int64_t{mc.n_head_kv} * mc.head_dim;
  const int32_t first = lora_.first_layer, n_trained = mc.n_layer - first;
  const bool keep_all = train && !options_.recompute;
  const size_t n_acts = keep_all ? static_cast<size_t>(n_trained) : 1;
  if (s.acts.size() != n_acts) s.acts.resize(n_acts);
  if (s.T != T) {
    s.T = T;
    ASSIGN_OR_RETURN(s.pos, Tensor::Empty(DType::kI32, Shape{T}));
    ASSIGN_OR_RETURN(s.mpos, Tensor::Empty(DType::kI32, Shape{T}));
    const auto n = [&](int64_t cols) { return static_cast<size_t>(T * cols); };
    s.hn.resize(n(E));
    s.dh.resize(n(E));
    s.dtmp.resize(n(E));
    s.dx.resize(n(std::max({E, Q, F})));
    s.xd.resize(n(std::max({E, Q, F})));
    s.dq.resize(n(Q));
    s.dmq.resize(n(Q));
    s.datt.resize(n(Q));
    s.dk.resize(n(K));
    s.dv.resize(n(K));
    s.dgate.resize(n(F));
    s.dup.resize(n(F));
    s.dact.resize(n(F));
  }
  for (int64_t t = 0; t < T; ++t) {
    s.pos.data_as<int32_t>()[t] = static_cast<int32_t>(batch.start_pos + t);
  }

  RETURN_IF_ERROR(BottomForward(batch, &s.h));
  if (train && options_.recompute) s.inputs.resize(static_cast<size_t>(n_trained));
  std::vector<float> next(static_cast<size_t>(T * E));
  for (int32_t l = first; l < mc.n_layer; ++l) {
    const size_t i = static_cast<size_t>(l - first);
    if (train && options_.recompute) s.inputs[i] = s.h;
    LayerActs& a = s.acts[keep_all ? i : 0];
    RETURN_IF_ERROR(LayerForward(l, params, batch, train, s.h.data(), &a, next.data()));
    s.h.swap(next);
  }
  RmsNormForward(s.h.data(), model_->weights().output_norm.data_as<const float>(), T, E,
                 mc.norm_eps, s.hn.data());
  CrossEntropyOptions ce;
  ce.grad_scale = grad_scale;
  ce.rows_per_block = options_.ce_rows_per_block;
  ce.vocab_block = options_.ce_vocab_block;
  ASSIGN_OR_RETURN(CrossEntropyResult loss,
                   FusedCrossEntropy(options_.pool, s.hn.data(),
                                     weights_->head.data_as<const float>(), batch.labels.data(), T,
                                     E, mc.n_vocab, train ? s.dtmp.data() : nullptr, ce));
  if (!train) return loss;
  // dh = d(h_final) through the frozen output norm.
  RmsNormBackward(options_.pool, s.h.data(), model_->weights().output_norm.data_as<const float>(),
                  s.dtmp.data(), T, E, mc.norm_eps, s.dh.data(), nullptr);
  for (int32_t l = mc.n_layer - 1; l >= first; --l) {
    const size_t i = static_cast<size_t>(l - first);
    if (options_.recompute) {
      RETURN_IF_ERROR(
          LayerForward(l, params, batch, true, s.inputs[i].data(), &s.acts[0], next.data()));
    }
    RETURN_IF_ERROR(LayerBackward(l, params, batch, s.acts[keep_all ? i : 0], grads, s.dh.data()));
  }
  return loss;
}

StatusOr<CrossEntropyResult> TrainModel::Loss(const LoraParams& params, const TrainBatch& batch) {
  return Run(params, batch, /*train=*/false, 0.0f, {});
}

StatusOr<CrossEntropyResult> TrainModel::ForwardBackward(const LoraParams& params,
                                                         const TrainBatch& batch, float grad_scale,
                                                         std::span<float> grads) {
  return Run(params, batch, /*train=*/true, grad_scale, grads);
}

}  // namespace muninn::model
