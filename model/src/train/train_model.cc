// The training forward/backward of a llama model with LoRA (contract in train_model.h). Every
// buffer is a packed f32 tensor on the model's backend, computed with its TrainOps (train_ops.h);
// shapes in comments use T tokens, E = n_embd, Q = n_head·hd, K = n_head_kv·hd, F = n_ff,
// R = LoRA rank.
#include "muninn/model/train_model.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "muninn/core/attention_backward.h"
#include "muninn/core/backward.h"
#include "muninn/core/buffer.h"
#include "muninn/core/train_ops.h"
#include "muninn/model/memory_placement.h"
#include "train/bottom_cache.h"

namespace muninn::model {

namespace {

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

// Frozen f32 copies of the trained layers' matrices and of the head, on the model's device.
struct TrainModel::Weights {
  struct Layer {
    std::array<Tensor, kNumLoraTargets> w;  // indexed by LoraTarget: [n_out, n_in] f32
    Tensor attn_norm, ffn_norm;             // [n_embd] the frozen norms (when not trained)
  };
  std::vector<Layer> layers;  // [n_layer - first_layer]
  Tensor head;                // [n_vocab, n_embd] f32
  Tensor output_norm;         // [n_embd]
};

// What one trained layer's backward needs from its forward (f32 on the model's device).
struct TrainModel::LayerActs {
  int64_t T = 0;
  Tensor h_in;   // [T, E] layer input
  Tensor x1;     // [T, E] attn_norm output
  Tensor q;      // [T, Q] after RoPE (viewed as [T, n_head, hd])
  Tensor k;      // [T, K] after RoPE
  Tensor v;      // [T, K]
  Tensor mq;     // [T, Q] memory queries (query_position mode), or undefined
  Tensor att;    // [T, Q] attention output
  Tensor lse;    // [T, n_head]
  Tensor h_mid;  // [T, E] after the attention residual
  Tensor x2;     // [T, E] ffn_norm output
  Tensor gate;   // [T, F] before SwiGLU
  Tensor up;     // [T, F]
  Tensor act;    // [T, F] silu(gate)·up
  std::array<Tensor, kNumLoraTargets> u;  // [T, R] x·Aᵀ per trained target
};

struct TrainModel::Scratch {
  int64_t T = 0;
  Tensor pos;                   // [T] i32 positions (host)
  Tensor pos_dev;               // the same where the training ops run (pos itself on the CPU)
  Tensor mpos;                  // [T] i32 the memory queries' position (host)
  std::vector<LayerActs> acts;  // per trained layer, or one (recompute / loss only)
  std::vector<Tensor> inputs;   // recompute: each trained layer's input [T, E]
  std::vector<float> h_host;    // [T, E] the frozen bottom's output on the host
  Tensor h, next;               // [T, E] residual stream
  Tensor hn;                    // [T, E] output_norm(h)
  Tensor dh;                    // [T, E]
  Tensor dtmp;                  // [T, E]
  Tensor dx;                    // [T · max(E, Q, F)], viewed as [T, n_in]
  Tensor xd;                    // [T · max(E, Q, F)] dropped-out LoRA input
  Tensor dq, dmq, datt;         // [T, Q]
  Tensor dk, dv;                // [T, K]
  Tensor dgate, dup, dact;      // [T, F]
  // Per call: the LoRA parameters and (training) the gradient arena on the device — views of the
  // caller's arrays on the CPU, device copies otherwise — and each trained layer's memory K/V.
  Tensor pv, gv;
  std::vector<Tensor> mem_k, mem_v;  // [n_trained], undefined where a layer reads no memory
  explicit Scratch(const Model& model) : placement(model) {}
  MemoryPlacement placement;  // the batch's memory where the model's layers run
};

namespace {

// A packed f32 tensor of `shape` viewing `n` floats at float offset `off` of `flat`'s bytes.
StatusOr<Tensor> Sub(const Tensor& flat, int64_t off, const Shape& shape) {
  return Tensor::FromBuffer(flat.buffer(), flat.offset() + static_cast<size_t>(off) * sizeof(float),
                            DType::kF32, shape);
}

}  // namespace

TrainModel::TrainModel(Model* model, const LoraConfig& config, const TrainModelOptions& options)
    : model_(model), lora_(config), options_(options) {}

TrainModel::~TrainModel() = default;

StatusOr<std::unique_ptr<TrainModel>> TrainModel::Create(Model* model, const LoraConfig& config,
                                                         const TrainModelOptions& options) {
  MUNINN_CHECK(model != nullptr);
  const ModelConfig& mc = model->config();
  RETURN_IF_ERROR(config.Validate(mc));
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
  Backend* be = model->backend();
  auto ops = be->CreateTrainOps(options.pool);
  if (!ops.ok()) {
    return ops.status().WithContext("training on " + be->device().ToString() + " (" + be->name() +
                                    ")");
  }
  std::unique_ptr<TrainModel> tm(new TrainModel(model, config, options));
  tm->ops_ = std::move(ops).value();
  // f32 copies of the frozen matrices, dequantized on the host (a device model's weights are
  // copied back for that once) and placed on the model's device.
  auto f32_copy = [&](const Tensor& w) -> StatusOr<Tensor> {
    ASSIGN_OR_RETURN(Tensor host, OnHost(*be, w));
    ASSIGN_OR_RETURN(Tensor f, DequantizeToF32(host));
    return ToBackend(*be, f);
  };
  tm->host_norms_ = mw;
  for (LayerWeights& lw : tm->host_norms_.layers) {
    for (Tensor* t : {&lw.attn_norm, &lw.ffn_norm}) {
      if (t->defined()) {
        ASSIGN_OR_RETURN(*t, OnHost(*be, *t));
      }
    }
  }
  ASSIGN_OR_RETURN(tm->host_norms_.output_norm, OnHost(*be, mw.output_norm));
  tm->weights_ = std::make_unique<Weights>();
  for (int32_t l = config.first_layer; l < mc.n_layer; ++l) {
    const LayerWeights& lw = mw.layers[static_cast<size_t>(l)];
    Weights::Layer wl;
    const Tensor* src[kNumLoraTargets] = {&lw.wq,     &lw.wk,   &lw.wv,    &lw.wo,
                                          &lw.w_gate, &lw.w_up, &lw.w_down};
    for (int t = 0; t < kNumLoraTargets; ++t) {
      auto w = f32_copy(*src[t]);
      if (!w.ok()) return w.status().WithContext("layer " + std::to_string(l));
      wl.w[static_cast<size_t>(t)] = std::move(w).value();
    }
    // The norms where the training ops run (a split model keeps its lower layers' on the host).
    ASSIGN_OR_RETURN(wl.attn_norm, ToBackend(*be, lw.attn_norm));
    ASSIGN_OR_RETURN(wl.ffn_norm, ToBackend(*be, lw.ffn_norm));
    tm->weights_->layers.push_back(std::move(wl));
  }
  ASSIGN_OR_RETURN(tm->weights_->output_norm, ToBackend(*be, mw.output_norm));
  auto head = f32_copy(mw.output);
  if (!head.ok()) return head.status().WithContext("output head");
  tm->weights_->head = std::move(head).value();
  if (!options.bottom_cache_dir.empty()) {
    auto c = train::BottomCache::Open(options.bottom_cache_dir, *model, config.first_layer);
    if (!c.ok()) return c.status();
    tm->cache_ = std::make_unique<train::BottomCache>(std::move(c).value());
  }
  tm->scratch_ = std::make_unique<Scratch>(*model);
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
  Backend* be = model_->LayerBackend(0);  // the embeddings' (the host's in a split model)
  const int64_t T = static_cast<int64_t>(batch.ids.size());
  h->resize(static_cast<size_t>(T * mc.n_embd));
  if (lora_.first_layer == 0) {
    ASSIGN_OR_RETURN(Tensor ids, Tensor::Empty(DType::kI32, Shape{T}));
    std::copy(batch.ids.begin(), batch.ids.end(), ids.data_as<int32_t>());
    ASSIGN_OR_RETURN(Tensor out, be->Allocate(DType::kF32, Shape{T, mc.n_embd}));
    RETURN_IF_ERROR(be->GetRows(model_->weights().tok_embd, ids, &out));
    ASSIGN_OR_RETURN(const Tensor host, OnHost(*be, out));
    const float* o = host.data_as<const float>();
    for (size_t i = 0; i < h->size(); ++i) (*h)[i] = o[i] * mc.embd_scale;
    return Status::Ok();
  }
  ForwardOptions fo;
  fo.memory = batch.memory;
  fo.compute_logits = false;
  fo.start_pos = batch.start_pos;
  fo.last_layer = lora_.first_layer - 1;
  bool got = false;
  Status copied;
  fo.observer = [&](const Intermediate& im) {
    if (im.layer != fo.last_layer || im.name != "hidden") return;
    MUNINN_CHECK(im.value.dtype() == DType::kF32 && im.value.numel() == T * mc.n_embd);
    // The value itself on the CPU; copied back from a device (the model's backend) otherwise.
    auto host = OnHost(*model_->backend(), im.value);
    if (!host.ok()) {
      copied = host.status();
      return;
    }
    std::memcpy(h->data(), host->data(), h->size() * sizeof(float));
    got = true;
  };
  auto r = model_->Forward(batch.ids, nullptr, fo);
  if (!r.ok()) return r.status().WithContext("frozen layers' forward");
  RETURN_IF_ERROR(copied.WithContext("frozen layers' output"));
  MUNINN_CHECK(got) << "the frozen forward did not report layer " << fo.last_layer << "'s output";
  return Status::Ok();
}

Status TrainModel::EnsureActs(const LoraParams& params, int32_t layer, bool mem_q, int64_t T,
                              LayerActs* a) {
  const ModelConfig& mc = model_->config();
  Backend* be = model_->backend();
  const int64_t E = mc.n_embd, F = mc.n_ff;
  const int64_t Q = int64_t{mc.n_head} * mc.head_dim, K = int64_t{mc.n_head_kv} * mc.head_dim;
  auto alloc = [&](Tensor* t, int64_t cols) -> Status {
    if (t->defined() && t->dim(0) == T && t->dim(1) == cols) return Status::Ok();
    ASSIGN_OR_RETURN(*t, be->Allocate(DType::kF32, Shape{T, cols}));
    return Status::Ok();
  };
  a->T = T;
  for (auto [t, cols] : {std::pair{&a->h_in, E},
                         {&a->x1, E},
                         {&a->q, Q},
                         {&a->k, K},
                         {&a->v, K},
                         {&a->att, Q},
                         {&a->lse, int64_t{mc.n_head}},
                         {&a->h_mid, E},
                         {&a->x2, E},
                         {&a->gate, F},
                         {&a->up, F},
                         {&a->act, F}}) {
    RETURN_IF_ERROR(alloc(t, cols));
  }
  if (mem_q) RETURN_IF_ERROR(alloc(&a->mq, Q));
  for (int t = 0; t < kNumLoraTargets; ++t) {
    if (params.OffsetA(layer, static_cast<LoraTarget>(t)) >= 0) {
      RETURN_IF_ERROR(alloc(&a->u[static_cast<size_t>(t)], lora_.rank));
    }
  }
  return Status::Ok();
}

Status TrainModel::LayerForward(int32_t layer, const LoraParams& params, const TrainBatch& batch,
                                bool train, const Tensor& h_in, LayerActs* a, Tensor* h_out) {
  const ModelConfig& mc = model_->config();
  Scratch& s = *scratch_;
  TrainOps& ops = *ops_;
  Backend* be = model_->backend();
  const int64_t T = static_cast<int64_t>(batch.ids.size());
  const int64_t hd = mc.head_dim, H = mc.n_head, Hkv = mc.n_head_kv;
  const size_t li = static_cast<size_t>(layer - lora_.first_layer);
  const Weights::Layer& W = weights_->layers[li];
  auto norm = [&](int64_t off, const Tensor& fallback) -> StatusOr<Tensor> {
    if (off < 0) return fallback;
    return Sub(s.pv, off, Shape{mc.n_embd});
  };
  // y[T, n_out] = x·Wᵀ, plus the LoRA path when t trains (u kept in a->u[t]).
  auto project = [&](LoraTarget t, const Tensor& x, Tensor* y) -> Status {
    const int64_t n_in = params.InDim(t), n_out = params.OutDim(t);
    RETURN_IF_ERROR(ops.Linear(x, W.w[static_cast<size_t>(t)], y));
    const int64_t oa = params.OffsetA(layer, t);
    if (oa < 0) return Status::Ok();
    LoraDims d{T,
               n_in,
               n_out,
               lora_.rank,
               lora_.scale(),
               train ? lora_.dropout : 0.0f,
               DropoutSeed(batch.dropout_seed, layer, t)};
    Tensor xd = x;
    if (d.dropout > 0.0f) {
      ASSIGN_OR_RETURN(xd, Sub(s.xd, 0, Shape{T, n_in}));
      RETURN_IF_ERROR(ops.LoraDropout(d, x, &xd));
    }
    ASSIGN_OR_RETURN(Tensor A, Sub(s.pv, oa, Shape{lora_.rank, n_in}));
    ASSIGN_OR_RETURN(Tensor B, Sub(s.pv, params.OffsetB(layer, t), Shape{n_out, lora_.rank}));
    return ops.LoraForward(d, xd, A, B, &a->u[static_cast<size_t>(t)], y);
  };

  const LayerMemoryKV* mem = batch.memory != nullptr ? batch.memory->ForLayer(layer) : nullptr;
  const bool use_mq = mem != nullptr && mem->query_position >= 0;
  RETURN_IF_ERROR(EnsureActs(params, layer, use_mq, T, a));
  RETURN_IF_ERROR(be->Copy(h_in, &a->h_in));

  // ---- attention ----
  ASSIGN_OR_RETURN(Tensor attn_norm, norm(params.OffsetAttnNorm(layer), W.attn_norm));
  RETURN_IF_ERROR(ops.RmsNormForward(h_in, attn_norm, mc.norm_eps, &a->x1));
  RETURN_IF_ERROR(project(LoraTarget::kQ, a->x1, &a->q));
  RETURN_IF_ERROR(project(LoraTarget::kK, a->x1, &a->k));
  RETURN_IF_ERROR(project(LoraTarget::kV, a->x1, &a->v));
  AttentionTrainTensors in;
  ASSIGN_OR_RETURN(in.q, a->q.Reshape(Shape{T, H, hd}));
  ASSIGN_OR_RETURN(in.k, a->k.Reshape(Shape{T, Hkv, hd}));
  ASSIGN_OR_RETURN(in.v, a->v.Reshape(Shape{T, Hkv, hd}));
  if (use_mq) {
    RETURN_IF_ERROR(be->Copy(a->q, &a->mq));
    std::fill(s.mpos.data_as<int32_t>(), s.mpos.data_as<int32_t>() + T,
              static_cast<int32_t>(mem->query_position));
    ASSIGN_OR_RETURN(in.mem_q, a->mq.Reshape(Shape{T, H, hd}));
    RETURN_IF_ERROR(be->Rope(in.mem_q, s.mpos, mc.rope, &in.mem_q));
  }
  RETURN_IF_ERROR(be->Rope(in.q, s.pos_dev, mc.rope, &in.q));
  RETURN_IF_ERROR(be->Rope(in.k, s.pos_dev, mc.rope, &in.k));
  if (mem != nullptr) {
    in.mem_k = s.mem_k[li];
    in.mem_v = s.mem_v[li];
  }
  const int64_t off_gate = params.OffsetMemGate(layer);
  if (off_gate >= 0) {
    ASSIGN_OR_RETURN(in.mem_bias, Sub(s.pv, off_gate, Shape{H}));
  }
  ASSIGN_OR_RETURN(Tensor att3, a->att.Reshape(Shape{T, H, hd}));
  RETURN_IF_ERROR(ops.AttentionForward(LayerAttentionDims(mc, T, mem), in, &att3, &a->lse));
  RETURN_IF_ERROR(project(LoraTarget::kO, a->att, &a->h_mid));
  RETURN_IF_ERROR(ops.AddInPlace(h_in, &a->h_mid));

  // ---- MLP ----
  ASSIGN_OR_RETURN(Tensor ffn_norm, norm(params.OffsetFfnNorm(layer), W.ffn_norm));
  RETURN_IF_ERROR(ops.RmsNormForward(a->h_mid, ffn_norm, mc.norm_eps, &a->x2));
  RETURN_IF_ERROR(project(LoraTarget::kGate, a->x2, &a->gate));
  RETURN_IF_ERROR(project(LoraTarget::kUp, a->x2, &a->up));
  RETURN_IF_ERROR(ops.SwiGluForward(a->gate, a->up, &a->act));
  RETURN_IF_ERROR(project(LoraTarget::kDown, a->act, h_out));
  return ops.AddInPlace(a->h_mid, h_out);
}

Status TrainModel::LayerBackward(int32_t layer, const LoraParams& params, const TrainBatch& batch,
                                 const LayerActs& a) {
  const ModelConfig& mc = model_->config();
  Scratch& s = *scratch_;
  TrainOps& ops = *ops_;
  const int64_t T = a.T;
  const int64_t E = mc.n_embd, hd = mc.head_dim, H = mc.n_head, Hkv = mc.n_head_kv;
  const size_t li = static_cast<size_t>(layer - lora_.first_layer);
  const Weights::Layer& W = weights_->layers[li];
  // dx (+)= dy·W for target t (written when !accumulate), plus the LoRA path's dx and dA, dB.
  auto project_back = [&](LoraTarget t, const Tensor& dy, const Tensor& x, Tensor* dx,
                          bool accumulate) -> Status {
    const int64_t n_in = params.InDim(t), n_out = params.OutDim(t);
    RETURN_IF_ERROR(ops.LinearBackwardInput(dy, W.w[static_cast<size_t>(t)], accumulate, dx));
    const int64_t oa = params.OffsetA(layer, t);
    if (oa < 0) return Status::Ok();
    const int64_t ob = params.OffsetB(layer, t);
    LoraDims d{T,
               n_in,
               n_out,
               lora_.rank,
               lora_.scale(),
               lora_.dropout,
               DropoutSeed(batch.dropout_seed, layer, t)};
    Tensor xd = x;
    if (d.dropout > 0.0f) {
      ASSIGN_OR_RETURN(xd, Sub(s.xd, 0, Shape{T, n_in}));
      RETURN_IF_ERROR(ops.LoraDropout(d, x, &xd));
    }
    ASSIGN_OR_RETURN(Tensor A, Sub(s.pv, oa, Shape{lora_.rank, n_in}));
    ASSIGN_OR_RETURN(Tensor B, Sub(s.pv, ob, Shape{n_out, lora_.rank}));
    ASSIGN_OR_RETURN(Tensor dA, Sub(s.gv, oa, Shape{lora_.rank, n_in}));
    ASSIGN_OR_RETURN(Tensor dB, Sub(s.gv, ob, Shape{n_out, lora_.rank}));
    return ops.LoraBackward(d, dy, xd, a.u[static_cast<size_t>(t)], A, B, &dA, &dB, dx);
  };
  auto norm_w = [&](int64_t off, const Tensor& fallback) -> StatusOr<Tensor> {
    if (off < 0) return fallback;
    return Sub(s.pv, off, Shape{E});
  };
  auto norm_g = [&](int64_t off) -> StatusOr<Tensor> {
    if (off < 0) return Tensor();
    return Sub(s.gv, off, Shape{E});
  };
  auto ptr = [](Tensor& t) { return t.defined() ? &t : nullptr; };
  ASSIGN_OR_RETURN(Tensor dx_e, Sub(s.dx, 0, Shape{T, E}));

  // ---- MLP: h_out = h_mid + down(silu(gate)·up) ----
  RETURN_IF_ERROR(project_back(LoraTarget::kDown, s.dh, a.act, &s.dact, false));
  RETURN_IF_ERROR(ops.SwiGluBackward(a.gate, a.up, s.dact, &s.dgate, &s.dup));
  RETURN_IF_ERROR(project_back(LoraTarget::kGate, s.dgate, a.x2, &dx_e, false));
  RETURN_IF_ERROR(project_back(LoraTarget::kUp, s.dup, a.x2, &dx_e, true));
  const int64_t off_ffn = params.OffsetFfnNorm(layer);
  ASSIGN_OR_RETURN(Tensor ffn_w, norm_w(off_ffn, W.ffn_norm));
  ASSIGN_OR_RETURN(Tensor ffn_g, norm_g(off_ffn));
  RETURN_IF_ERROR(ops.RmsNormBackward(a.h_mid, ffn_w, dx_e, mc.norm_eps, &s.dtmp, ptr(ffn_g)));
  RETURN_IF_ERROR(ops.AddInPlace(s.dtmp, &s.dh));  // dh is now d(h_mid)

  // ---- attention: h_mid = h_in + o(Attention(rope(q), rope(k), v)) ----
  RETURN_IF_ERROR(project_back(LoraTarget::kO, s.dh, a.att, &s.datt, false));
  const LayerMemoryKV* mem = batch.memory != nullptr ? batch.memory->ForLayer(layer) : nullptr;
  const bool mem_q = a.mq.defined() && mem != nullptr && mem->query_position >= 0;
  AttentionTrainTensors in;
  ASSIGN_OR_RETURN(in.q, a.q.Reshape(Shape{T, H, hd}));
  ASSIGN_OR_RETURN(in.k, a.k.Reshape(Shape{T, Hkv, hd}));
  ASSIGN_OR_RETURN(in.v, a.v.Reshape(Shape{T, Hkv, hd}));
  if (mem_q) {
    ASSIGN_OR_RETURN(in.mem_q, a.mq.Reshape(Shape{T, H, hd}));
  }
  if (mem != nullptr) {
    in.mem_k = s.mem_k[li];
    in.mem_v = s.mem_v[li];
  }
  const int64_t off_gate = params.OffsetMemGate(layer);
  Tensor dgate_bias;
  if (off_gate >= 0) {
    ASSIGN_OR_RETURN(in.mem_bias, Sub(s.pv, off_gate, Shape{H}));
    ASSIGN_OR_RETURN(dgate_bias, Sub(s.gv, off_gate, Shape{H}));
  }
  ASSIGN_OR_RETURN(Tensor att3, a.att.Reshape(Shape{T, H, hd}));
  ASSIGN_OR_RETURN(Tensor datt3, s.datt.Reshape(Shape{T, H, hd}));
  ASSIGN_OR_RETURN(Tensor dq3, s.dq.Reshape(Shape{T, H, hd}));
  ASSIGN_OR_RETURN(Tensor dk3, s.dk.Reshape(Shape{T, Hkv, hd}));
  ASSIGN_OR_RETURN(Tensor dv3, s.dv.Reshape(Shape{T, Hkv, hd}));
  ASSIGN_OR_RETURN(Tensor dmq3, s.dmq.Reshape(Shape{T, H, hd}));
  AttentionTrainGrads g{&dq3, &dk3, &dv3, mem_q ? &dmq3 : nullptr, ptr(dgate_bias)};
  RETURN_IF_ERROR(ops.AttentionBackward(LayerAttentionDims(mc, T, mem), in, att3, a.lse, datt3, g));
  RETURN_IF_ERROR(ops.RopeBackward(dq3, s.pos_dev, mc.rope, &dq3));
  RETURN_IF_ERROR(ops.RopeBackward(dk3, s.pos_dev, mc.rope, &dk3));
  if (mem_q) {
    RETURN_IF_ERROR(ops.RopeBackward(dmq3, s.mpos, mc.rope, &dmq3));
    RETURN_IF_ERROR(ops.AddInPlace(s.dmq, &s.dq));
  }
  RETURN_IF_ERROR(project_back(LoraTarget::kQ, s.dq, a.x1, &dx_e, false));
  RETURN_IF_ERROR(project_back(LoraTarget::kK, s.dk, a.x1, &dx_e, true));
  RETURN_IF_ERROR(project_back(LoraTarget::kV, s.dv, a.x1, &dx_e, true));
  const int64_t off_attn = params.OffsetAttnNorm(layer);
  ASSIGN_OR_RETURN(Tensor attn_w, norm_w(off_attn, W.attn_norm));
  ASSIGN_OR_RETURN(Tensor attn_g, norm_g(off_attn));
  RETURN_IF_ERROR(ops.RmsNormBackward(a.h_in, attn_w, dx_e, mc.norm_eps, &s.dtmp, ptr(attn_g)));
  return ops.AddInPlace(s.dtmp, &s.dh);  // dh is now d(h_in)
}

Status TrainModel::PrepareScratch(int64_t T) {
  Scratch& s = *scratch_;
  if (s.T == T) return Status::Ok();
  const ModelConfig& mc = model_->config();
  Backend* be = model_->backend();
  const int64_t E = mc.n_embd, F = mc.n_ff;
  const int64_t Q = int64_t{mc.n_head} * mc.head_dim, K = int64_t{mc.n_head_kv} * mc.head_dim;
  s.T = 0;  // until every tensor below exists
  ASSIGN_OR_RETURN(s.pos, Tensor::Empty(DType::kI32, Shape{T}));
  ASSIGN_OR_RETURN(s.mpos, Tensor::Empty(DType::kI32, Shape{T}));
  const int64_t widest = std::max({E, Q, F});
  for (auto [t, shape] : {std::pair{&s.h, Shape{T, E}},
                          {&s.next, Shape{T, E}},
                          {&s.hn, Shape{T, E}},
                          {&s.dh, Shape{T, E}},
                          {&s.dtmp, Shape{T, E}},
                          {&s.dx, Shape{T * widest}},
                          {&s.xd, Shape{T * widest}},
                          {&s.dq, Shape{T, Q}},
                          {&s.dmq, Shape{T, Q}},
                          {&s.datt, Shape{T, Q}},
                          {&s.dk, Shape{T, K}},
                          {&s.dv, Shape{T, K}},
                          {&s.dgate, Shape{T, F}},
                          {&s.dup, Shape{T, F}},
                          {&s.dact, Shape{T, F}}}) {
    ASSIGN_OR_RETURN(*t, be->Allocate(DType::kF32, shape));
  }
  s.T = T;
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
  TrainOps& ops = *ops_;
  Backend* be = model_->backend();
  const bool on_host = be->device().is_cpu();
  const int64_t T = static_cast<int64_t>(batch.ids.size());
  const int64_t E = mc.n_embd;
  const int32_t first = lora_.first_layer, n_trained = mc.n_layer - first;
  const bool keep_all = train && !options_.recompute;
  const size_t n_acts = keep_all ? static_cast<size_t>(n_trained) : 1;
  if (s.acts.size() != n_acts) s.acts.resize(n_acts);
  RETURN_IF_ERROR(PrepareScratch(T));
  for (int64_t t = 0; t < T; ++t) {
    s.pos.data_as<int32_t>()[t] = static_cast<int32_t>(batch.start_pos + t);
  }
  // Up once for every RoPE of the call (each host operand would be a copy of its own on a device).
  ASSIGN_OR_RETURN(s.pos_dev, ToBackend(*be, s.pos));
  // The parameters (and the gradient arena) on the device: views of the caller's floats on the
  // CPU, copies on a device (the gradients go up with their current values so that a device adds
  // to them exactly as the CPU does, and come back at the end).
  const Shape arena{params.size()};
  ASSIGN_OR_RETURN(Tensor host_params,
                   Tensor::WrapHost(const_cast<float*>(params.values().data()), DType::kF32, arena));
  ASSIGN_OR_RETURN(s.pv, ToBackend(*be, host_params));
  Tensor host_grads;
  s.gv = Tensor();
  if (train) {
    ASSIGN_OR_RETURN(host_grads, Tensor::WrapHost(grads.data(), DType::kF32, arena));
    ASSIGN_OR_RETURN(s.gv, ToBackend(*be, host_grads));
  }
  // The memory K/V on the device (copied once per call; the same tensors on the CPU), for the
  // frozen bottom and the trained layers alike.
  TrainBatch placed = batch;
  MemoryKV placed_memory;
  if (batch.memory != nullptr) {
    ASSIGN_OR_RETURN(placed_memory, s.placement.Place(*batch.memory));
    placed.memory = &placed_memory;
  }
  s.mem_k.assign(static_cast<size_t>(n_trained), Tensor());
  s.mem_v.assign(static_cast<size_t>(n_trained), Tensor());
  for (int32_t l = first; l < mc.n_layer && placed.memory != nullptr; ++l) {
    const LayerMemoryKV* m = placed.memory->ForLayer(l);
    if (m == nullptr) continue;
    // The trained layers read it where the training ops run.
    ASSIGN_OR_RETURN(s.mem_k[static_cast<size_t>(l - first)], ToBackend(*be, m->k));
    ASSIGN_OR_RETURN(s.mem_v[static_cast<size_t>(l - first)], ToBackend(*be, m->v));
  }

  RETURN_IF_ERROR(BottomForward(placed, &s.h_host));
  ASSIGN_OR_RETURN(Tensor bottom, Tensor::WrapHost(s.h_host.data(), DType::kF32, Shape{T, E}));
  RETURN_IF_ERROR(be->Transfer(bottom, &s.h));
  if (train && options_.recompute) s.inputs.resize(static_cast<size_t>(n_trained));
  for (int32_t l = first; l < mc.n_layer; ++l) {
    const size_t i = static_cast<size_t>(l - first);
    if (train && options_.recompute) {
      Tensor& in = s.inputs[i];
      if (!in.defined() || in.dim(0) != T) {
        ASSIGN_OR_RETURN(in, be->Allocate(DType::kF32, Shape{T, E}));
      }
      RETURN_IF_ERROR(be->Copy(s.h, &in));
    }
    LayerActs& a = s.acts[keep_all ? i : 0];
    RETURN_IF_ERROR(LayerForward(l, params, placed, train, s.h, &a, &s.next));
    std::swap(s.h, s.next);
  }
  const Tensor& out_norm = weights_->output_norm;
  RETURN_IF_ERROR(ops.RmsNormForward(s.h, out_norm, mc.norm_eps, &s.hn));
  CrossEntropyOptions ce;
  ce.grad_scale = grad_scale;
  ce.rows_per_block = options_.ce_rows_per_block;
  ce.vocab_block = options_.ce_vocab_block;
  ASSIGN_OR_RETURN(CrossEntropyResult loss, ops.CrossEntropy(s.hn, weights_->head, placed.labels,
                                                             ce, train ? &s.dtmp : nullptr));
  if (!train) return loss;
  // dh = d(h_final) through the frozen output norm.
  RETURN_IF_ERROR(ops.RmsNormBackward(s.h, out_norm, s.dtmp, mc.norm_eps, &s.dh, nullptr));
  for (int32_t l = mc.n_layer - 1; l >= first; --l) {
    const size_t i = static_cast<size_t>(l - first);
    if (options_.recompute) {
      RETURN_IF_ERROR(LayerForward(l, params, placed, true, s.inputs[i], &s.acts[0], &s.next));
    }
    RETURN_IF_ERROR(LayerBackward(l, params, placed, s.acts[keep_all ? i : 0]));
  }
  if (!on_host) RETURN_IF_ERROR(be->Transfer(s.gv, &host_grads));
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
