#include "muninn/model/model.h"

#include "weight_placement.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

namespace muninn::model {

namespace {

std::string Dims(const Tensor& t) { return t.defined() ? t.DebugString() : "<missing>"; }

Status CheckWeight(Backend* backend, const Tensor& t, const std::string& name, const Shape& want,
                   OpKind op) {
  if (!t.defined()) return InvalidArgumentError("model weight " + name + " is missing");
  if (!(t.shape() == want)) {
    return InvalidArgumentError("model weight " + name + " has shape " + t.shape().ToString() +
                                ", expected " + want.ToString());
  }
  if (!t.rows_contiguous()) {
    return InvalidArgumentError("model weight " + name + " must have packed rows: " + Dims(t));
  }
  if (!backend->SupportsOp(OpDesc{op, t.dtype()})) {
    return UnimplementedError("model weight " + name + " has dtype " +
                              std::string(DTypeName(t.dtype())) + ", which backend " +
                              backend->name() + " cannot use for this op");
  }
  return Status::Ok();
}

Status CheckNorm(const Tensor& t, const std::string& name, int64_t n) {
  if (!t.defined()) return InvalidArgumentError("model weight " + name + " is missing");
  if (t.dtype() != DType::kF32 || !(t.shape() == Shape{n}) || !t.is_contiguous()) {
    return InvalidArgumentError("norm weight " + name + " must be a contiguous f32 [" +
                                std::to_string(n) + "], got " + Dims(t));
  }
  return Status::Ok();
}

// A [n, ...] prefix view of a scratch buffer reshaped to `shape`.
Tensor View(const Tensor& buf, const Shape& shape) {
  auto rows = buf.Slice(0, 0, shape[0]);
  MUNINN_CHECK(rows.ok()) << rows.status();
  auto v = rows->Reshape(shape);
  MUNINN_CHECK(v.ok()) << v.status();
  return std::move(v).value();
}

}  // namespace

Status ModelConfig::Validate() const {
  if (!(embd_scale > 0.0f) || !std::isfinite(embd_scale)) {
    return InvalidArgumentError("embedding scale must be finite and > 0, got " +
                                std::to_string(embd_scale));
  }
  auto positive = [](int32_t v) { return v > 0; };
  if (!positive(n_vocab) || !positive(n_embd) || !positive(n_layer) || !positive(n_head) ||
      !positive(n_head_kv) || !positive(head_dim) || !positive(n_ff)) {
    return InvalidArgumentError(
        "model config needs positive n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff; "
        "got " + std::to_string(n_vocab) + ", " + std::to_string(n_embd) + ", " +
        std::to_string(n_layer) + ", " + std::to_string(n_head) + ", " +
        std::to_string(n_head_kv) + ", " + std::to_string(head_dim) + ", " + std::to_string(n_ff));
  }
  if (n_head % n_head_kv != 0) {
    return InvalidArgumentError("n_head (" + std::to_string(n_head) +
                                ") must be a multiple of n_head_kv (" +
                                std::to_string(n_head_kv) + ")");
  }
  if (!(norm_eps >= 0.0f) || norm_eps > 1.0f) {
    return InvalidArgumentError("norm eps must be in [0, 1], got " + std::to_string(norm_eps));
  }
  if (rope.n_rot > head_dim) {
    return InvalidArgumentError("RoPE rotates " + std::to_string(rope.n_rot) +
                                " dims but a head has only " + std::to_string(head_dim));
  }
  return rope.Validate();
}

ModelLayout ModelLayout::Plain(int32_t n_layer) {
  ModelLayout l;
  l.stages.push_back(Stage{"core", 0, n_layer, 1});
  return l;
}

ModelLayout ModelLayout::Split(int32_t n_layer, int32_t core_first, int32_t core_end,
                               int32_t repeats) {
  ModelLayout l;
  if (core_first > 0) l.stages.push_back(Stage{"prelude", 0, core_first, 1});
  l.stages.push_back(Stage{"core", core_first, core_end, repeats});
  if (core_end < n_layer) l.stages.push_back(Stage{"coda", core_end, n_layer, 1});
  return l;
}

Status ModelLayout::Validate(int32_t n_layer) const {
  int32_t next = 0;
  for (const Stage& s : stages) {
    if (s.first != next || s.end <= s.first || s.end > n_layer) {
      return InvalidArgumentError("stage '" + s.name + "' covers layers [" +
                                  std::to_string(s.first) + ", " + std::to_string(s.end) +
                                  "), but stages must tile [0, " + std::to_string(n_layer) +
                                  ") in order; the next stage must start at " +
                                  std::to_string(next));
    }
    if (s.repeats < 1 || (s.repeats != 1 && s.name != "core")) {
      return InvalidArgumentError("stage '" + s.name + "' repeats " + std::to_string(s.repeats) +
                                  " times; only the stage named 'core' may repeat, at least once");
    }
    next = s.end;
  }
  if (next != n_layer) {
    return InvalidArgumentError("stages cover layers [0, " + std::to_string(next) +
                                ") but the model has " + std::to_string(n_layer));
  }
  return Status::Ok();
}

const Stage* ModelLayout::core() const {
  for (const Stage& s : stages) {
    if (s.name == "core") return &s;
  }
  return nullptr;
}

// Per-forward working buffers, sized for `capacity` tokens and reused while T fits.
struct Model::Scratch {
  int64_t capacity = 0;
  Tensor h;       // [cap, n_embd] residual stream
  Tensor x;       // [cap, n_embd] normed input of a sub-block
  Tensor q;       // [cap, n_head · hd]
  Tensor k;       // [cap, n_head_kv · hd]
  Tensor v;       // [cap, n_head_kv · hd]
  Tensor att;     // [cap, n_head · hd]
  Tensor proj;    // [cap, n_embd] output of Wo or Wdown
  Tensor gate;    // [cap, n_ff]
  Tensor up;      // [cap, n_ff]
  Tensor e;       // [cap, n_embd] prelude output (recurrent models)
  Tensor cat;     // [cap, 2·n_embd] adapter input [s ; e]
  Tensor saved;   // [cap, n_embd] the state while a read-out runs the coda
  Tensor mq;      // [cap, n_head · hd] memory queries (pre-RoPE q rotated at one position)
  Tensor ids;     // [cap] i32
  Tensor pos;     // [cap] i32
  Tensor mpos;    // [cap] i32, the memory queries' constant position
  // On a device backend: the positions and the memory queries' position uploaded once per forward
  // (every layer's RoPE reads them there; host positions would be copied up by each call).
  Tensor pos_dev;   // [cap] i32
  Tensor mpos_dev;  // [cap] i32
  int64_t mpos_dev_value = -1, mpos_dev_rows = 0;  // what mpos_dev holds (rows 0: nothing)
};

StatusOr<std::unique_ptr<Model>> Model::Create(Backend* backend, const ModelConfig& config,
                                               ModelWeights weights, ModelLayout layout) {
  return Create(backend, config, std::move(weights), std::move(layout), LayerSplit{});
}

StatusOr<std::unique_ptr<Model>> Model::Create(Backend* device, const ModelConfig& config,
                                               ModelWeights weights, ModelLayout layout,
                                               const LayerSplit& split) {
  MUNINN_CHECK(device != nullptr);
  RETURN_IF_ERROR(config.Validate());
  RETURN_IF_ERROR(layout.Validate(config.n_layer));
  const int32_t host_layers = split.host_layers;
  if (host_layers < 0 || host_layers >= config.n_layer) {
    return InvalidArgumentError("a layer split keeps 0.." + std::to_string(config.n_layer - 1) +
                                " layers on the host (at least one on the device), got " +
                                std::to_string(host_layers));
  }
  if (host_layers > 0) {
    if (split.host == nullptr || !split.host->device().is_cpu()) {
      return InvalidArgumentError("a layer split needs a CPU backend for the host layers");
    }
    if (device->device().is_cpu()) {
      return InvalidArgumentError("a layer split needs a device backend for the upper layers; "
                                  "without one every layer runs on the CPU anyway");
    }
  }
  // The backend that runs (and must support) the weights of layer l / the embeddings.
  auto backend_of = [&](int32_t l) { return l < host_layers ? split.host : device; };
  const int64_t n_embd = config.n_embd;
  const int64_t n_q = int64_t{config.n_head} * config.head_dim;
  const int64_t n_kv = int64_t{config.n_head_kv} * config.head_dim;
  RETURN_IF_ERROR(
      CheckWeight(backend_of(0), weights.tok_embd, "token_embd", Shape{config.n_vocab, n_embd},
                  OpKind::kGetRows));
  RETURN_IF_ERROR(CheckNorm(weights.output_norm, "output_norm", n_embd));
  RETURN_IF_ERROR(CheckWeight(device, weights.output, "output", Shape{config.n_vocab, n_embd},
                              OpKind::kMatMul));
  if (weights.layers.size() != static_cast<size_t>(config.n_layer)) {
    return InvalidArgumentError("model has " + std::to_string(weights.layers.size()) +
                                " layers of weights, config says " +
                                std::to_string(config.n_layer));
  }
  for (int32_t i = 0; i < config.n_layer; ++i) {
    const LayerWeights& l = weights.layers[static_cast<size_t>(i)];
    const std::string p = "blk." + std::to_string(i) + ".";
    Backend* const backend = backend_of(i);
    RETURN_IF_ERROR(CheckNorm(l.attn_norm, p + "attn_norm", n_embd));
    RETURN_IF_ERROR(CheckNorm(l.ffn_norm, p + "ffn_norm", n_embd));
    RETURN_IF_ERROR(CheckWeight(backend, l.wq, p + "attn_q", Shape{n_q, n_embd}, OpKind::kMatMul));
    RETURN_IF_ERROR(CheckWeight(backend, l.wk, p + "attn_k", Shape{n_kv, n_embd}, OpKind::kMatMul));
    RETURN_IF_ERROR(CheckWeight(backend, l.wv, p + "attn_v", Shape{n_kv, n_embd}, OpKind::kMatMul));
    RETURN_IF_ERROR(
        CheckWeight(backend, l.wo, p + "attn_output", Shape{n_embd, n_q}, OpKind::kMatMul));
    RETURN_IF_ERROR(CheckWeight(backend, l.w_gate, p + "ffn_gate", Shape{config.n_ff, n_embd},
                                OpKind::kMatMul));
    RETURN_IF_ERROR(CheckWeight(backend, l.w_up, p + "ffn_up", Shape{config.n_ff, n_embd},
                                OpKind::kMatMul));
    RETURN_IF_ERROR(CheckWeight(backend, l.w_down, p + "ffn_down", Shape{n_embd, config.n_ff},
                                OpKind::kMatMul));
    if (l.type == BlockType::kSandwich) {
      RETURN_IF_ERROR(CheckNorm(l.attn_post_norm, p + "attn_post_norm", n_embd));
      RETURN_IF_ERROR(CheckNorm(l.ffn_post_norm, p + "ffn_post_norm", n_embd));
    }
    if (l.q_bias.defined()) RETURN_IF_ERROR(CheckNorm(l.q_bias, p + "attn_q_bias", n_q));
    if (l.k_bias.defined()) RETURN_IF_ERROR(CheckNorm(l.k_bias, p + "attn_k_bias", n_kv));
    if (!l.mem_bias.empty()) {
      if (l.mem_bias.size() != static_cast<size_t>(config.n_head)) {
        return InvalidArgumentError(p + "mem_bias (memory gates) must hold n_head = " +
                                    std::to_string(config.n_head) + " values, got " +
                                    std::to_string(l.mem_bias.size()));
      }
      for (const float b : l.mem_bias) {
        if (!std::isfinite(b)) return InvalidArgumentError(p + "mem_bias has a non-finite value");
      }
    }
  }
  if (weights.adapter.defined()) {
    RETURN_IF_ERROR(CheckWeight(device, weights.adapter, "adapter", Shape{n_embd, 2 * n_embd},
                                OpKind::kMatMul));
    if (layout.core() == nullptr) {
      return InvalidArgumentError("a model with an input-injection adapter needs a 'core' stage");
    }
  }
  const bool tied = weights.output.data() == weights.tok_embd.data() &&
                    weights.output.dtype() == weights.tok_embd.dtype() &&
                    weights.output.shape() == weights.tok_embd.shape();
  if (host_layers > 0 && IsRecurrent(weights, layout)) {
    return UnimplementedError(
        "a layer split (partial offload) of a recurrent-depth model is not "
        "supported; put the whole model on one device");
  }
  if (host_layers > 0) {
    // Only what runs on the device goes there, tensor by tensor.
    ASSIGN_OR_RETURN(weights, PlaceUpperLayersOn(device, std::move(weights), host_layers));
  } else if (!device->device().is_cpu()) {
    // Weights come mapped or converted on the host; a device backend computes on its own copy.
    ASSIGN_OR_RETURN(weights, PlaceWeightsOn(device, std::move(weights)));
  }
  std::unique_ptr<Model> model(new Model(device, config, std::move(weights), std::move(layout)));
  model->host_backend_ = host_layers > 0 ? split.host : nullptr;
  model->host_layers_ = host_layers;
  model->tied_head_ = tied;
  return model;
}

size_t Model::weight_bytes() const {
  size_t total = weights_.tok_embd.nbytes() + weights_.output_norm.nbytes();
  if (!tied_head_) total += weights_.output.nbytes();
  for (const LayerWeights& l : weights_.layers) {
    for (const Tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.w_gate,
                            &l.w_up, &l.w_down, &l.attn_post_norm, &l.ffn_post_norm, &l.q_bias,
                            &l.k_bias}) {
      if (t->defined()) total += t->nbytes();
    }
  }
  if (weights_.adapter.defined()) total += weights_.adapter.nbytes();
  return total;
}

Status Model::SetLayout(ModelLayout layout) {
  RETURN_IF_ERROR(layout.Validate(config_.n_layer));
  layout_ = std::move(layout);
  return Status::Ok();
}

bool Model::IsRecurrent(const ModelWeights& weights, const ModelLayout& layout) {
  const Stage* core = layout.core();
  return weights.adapter.defined() || (core != nullptr && core->repeats > 1);
}

bool Model::is_recurrent() const { return IsRecurrent(weights_, layout_); }

int32_t Model::default_steps() const {
  const Stage* core = layout_.core();
  return core != nullptr ? core->repeats : 1;
}

KvSlotLayout Model::SlotLayoutFor(const KvCacheOptions& options) const {
  const Stage* core = layout_.core();
  if (!is_recurrent() || core == nullptr) return KvSlotLayout::PerLayer(config_.n_layer);
  KvSlotLayout l;
  l.n_prelude = core->first;
  l.n_core = core->end - core->first;
  l.n_coda = config_.n_layer - core->end;
  l.max_steps = options.max_steps > 0 ? options.max_steps : core->repeats;
  l.share = options.share;
  l.share_k = options.share_k;
  return l;
}

StatusOr<std::unique_ptr<KvCache>> Model::NewKvCache(const KvCacheOptions& options) const {
  if (host_layers_ == 0) {
    return KvCache::Create(backend_, SlotLayoutFor(options), config_.n_head_kv, config_.head_dim,
                           options);
  }
  // A split model is plain: slot l is layer l's.
  std::vector<Backend*> slots;
  for (int32_t l = 0; l < config_.n_layer; ++l) slots.push_back(LayerBackend(l));
  return KvCache::Create(slots, SlotLayoutFor(options), config_.n_head_kv, config_.head_dim,
                         options);
}

Status Model::EnsureScratch(int64_t n_tokens) {
  if (scratch_ && scratch_->capacity >= n_tokens) return Status::Ok();
  // Grow geometrically so a prefill followed by decode steps allocates once.
  const int64_t cap = std::max<int64_t>(n_tokens, scratch_ ? scratch_->capacity * 2 : 1);
  ASSIGN_OR_RETURN(std::shared_ptr<Scratch> dev, MakeScratch(backend_, cap));
  if (host_layers_ > 0) {
    ASSIGN_OR_RETURN(host_scratch_, MakeScratch(host_backend_, cap));
  }
  scratch_ = std::move(dev);
  return Status::Ok();
}

StatusOr<std::shared_ptr<Model::Scratch>> Model::MakeScratch(Backend* backend, int64_t cap) const {
  auto s = std::make_shared<Scratch>();
  s->capacity = cap;
  const int64_t n_q = int64_t{config_.n_head} * config_.head_dim;
  const int64_t n_kv = int64_t{config_.n_head_kv} * config_.head_dim;
  struct Want {
    Tensor* t;
    DType dtype;
    Shape shape;
  };
  const Want wants[] = {
      {&s->h, DType::kF32, Shape{cap, config_.n_embd}},
      {&s->x, DType::kF32, Shape{cap, config_.n_embd}},
      {&s->q, DType::kF32, Shape{cap, n_q}},
      {&s->k, DType::kF32, Shape{cap, n_kv}},
      {&s->v, DType::kF32, Shape{cap, n_kv}},
      {&s->att, DType::kF32, Shape{cap, n_q}},
      {&s->mq, DType::kF32, Shape{cap, n_q}},
      {&s->proj, DType::kF32, Shape{cap, config_.n_embd}},
      {&s->gate, DType::kF32, Shape{cap, config_.n_ff}},
      {&s->up, DType::kF32, Shape{cap, config_.n_ff}},
  };
  if (is_recurrent()) {
    ASSIGN_OR_RETURN(s->e, backend->Allocate(DType::kF32, Shape{cap, config_.n_embd}));
    ASSIGN_OR_RETURN(s->saved, backend->Allocate(DType::kF32, Shape{cap, config_.n_embd}));
    if (weights_.adapter.defined()) {
      ASSIGN_OR_RETURN(s->cat, backend->Allocate(DType::kF32, Shape{cap, 2 * config_.n_embd}));
    }
  }
  for (const Want& w : wants) {
    ASSIGN_OR_RETURN(*w.t, backend->Allocate(w.dtype, w.shape));
  }
  // ids and positions are read on the host by GetRows/Rope.
  ASSIGN_OR_RETURN(s->ids, Tensor::Empty(DType::kI32, Shape{cap}));
  ASSIGN_OR_RETURN(s->pos, Tensor::Empty(DType::kI32, Shape{cap}));
  ASSIGN_OR_RETURN(s->mpos, Tensor::Empty(DType::kI32, Shape{cap}));
  if (!backend->device().is_cpu()) {
    ASSIGN_OR_RETURN(s->pos_dev, backend->Allocate(DType::kI32, Shape{cap}));
    ASSIGN_OR_RETURN(s->mpos_dev, backend->Allocate(DType::kI32, Shape{cap}));
  }
  return s;
}

Status Model::RunLayer(int32_t layer, int32_t iteration, int64_t n_tokens,
                       const Tensor& positions, KvCache* cache, const KvUpdate* update,
                       const ForwardOptions& options, ForwardResult* result) {
  Scratch& s = ScratchOf(layer);
  Backend* const be = LayerBackend(layer);
  // A split model's host layers read the host copy of the positions.
  const Tensor host_positions = layer < host_layers_ ? View(s.pos, Shape{n_tokens}) : Tensor();
  const Tensor& pos = layer < host_layers_ ? host_positions : positions;
  const LayerWeights& w = weights_.layers[static_cast<size_t>(layer)];
  const bool sandwich = w.type == BlockType::kSandwich;
  const int64_t T = n_tokens;
  const int64_t hd = config_.head_dim;
  auto observe = [&](std::string_view name, const Tensor& t) {
    if (options.observer) options.observer(Intermediate{name, layer, t, iteration});
  };

  Tensor h = View(s.h, Shape{T, config_.n_embd});          // [T, n_embd]
  Tensor x = View(s.x, Shape{T, config_.n_embd});          // [T, n_embd]
  Tensor q2 = View(s.q, Shape{T, config_.n_head * hd});    // [T, n_head·hd]
  Tensor k2 = View(s.k, Shape{T, config_.n_head_kv * hd}); // [T, n_head_kv·hd]
  Tensor v2 = View(s.v, Shape{T, config_.n_head_kv * hd});
  Tensor q3 = View(s.q, Shape{T, config_.n_head, hd});     // [T, n_head, hd]
  Tensor k3 = View(s.k, Shape{T, config_.n_head_kv, hd});  // [T, n_head_kv, hd]
  Tensor v3 = View(s.v, Shape{T, config_.n_head_kv, hd});
  Tensor att3 = View(s.att, Shape{T, config_.n_head, hd}); // [T, n_head, hd]
  Tensor att2 = View(s.att, Shape{T, config_.n_head * hd});
  Tensor proj = View(s.proj, Shape{T, config_.n_embd});    // [T, n_embd]
  Tensor gate = View(s.gate, Shape{T, config_.n_ff});      // [T, n_ff]
  Tensor up = View(s.up, Shape{T, config_.n_ff});

  // A backend that fuses the decode step's sequences (norm + projections, RoPE + the KV cache
  // store, projection + residual, SwiGLU + down projection + residual) gets them in fewer
  // launches; an observer needs the intermediates the fused forms never write.
  const bool fuse = be->FusesDecodeOps(T) && !options.observer;

  // ---- attention ----
  {
    const Tensor* qkv_w[] = {&w.wq, &w.wk, &w.wv};
    Tensor* qkv_out[] = {&q2, &k2, &v2};
    if (fuse) {
      RETURN_IF_ERROR(be->RmsNormMatMulShared(h, w.attn_norm, config_.norm_eps, qkv_w, qkv_out));
    } else {
      RETURN_IF_ERROR(be->RmsNorm(h, w.attn_norm, config_.norm_eps, &x));
      observe("attn_norm", x);
      RETURN_IF_ERROR(be->MatMulShared(x, qkv_w, qkv_out));
    }
  }
  if (w.q_bias.defined()) RETURN_IF_ERROR(be->Add(q2, w.q_bias, &q2));
  if (w.k_bias.defined()) RETURN_IF_ERROR(be->Add(k2, w.k_bias, &k2));
  observe("q_pre_rope", q3);
  observe("k_pre_rope", k3);
  observe("v", v3);
  if (layer == options.capture_layer) {
    ASSIGN_OR_RETURN(result->captured_k, CopyToHost(*be, k3));
    ASSIGN_OR_RETURN(result->captured_v, CopyToHost(*be, v3));
  }
  for (size_t i = 0; i < options.capture_layers.size(); ++i) {
    if (options.capture_layers[i] != layer) continue;
    ForwardResult::CapturedKV& c = result->captured[i];
    c.layer = layer;
    ASSIGN_OR_RETURN(c.k, CopyToHost(*be, k3));
    ASSIGN_OR_RETURN(c.v, CopyToHost(*be, v3));
  }
  const LayerMemoryKV* memory =
      options.memory != nullptr ? options.memory->ForLayer(layer) : nullptr;
  Tensor mem_q3;  // [T, n_head, hd] the pre-RoPE queries rotated at the memory's one position
  if (memory != nullptr && memory->query_position >= 0) {
    if (memory->query_position > int64_t{INT32_MAX}) {
      return InvalidArgumentError("layer " + std::to_string(layer) + " memory query position " +
                                  std::to_string(memory->query_position) + " does not fit int32");
    }
    mem_q3 = View(s.mq, Shape{T, config_.n_head, hd});
    RETURN_IF_ERROR(be->Copy(q3, &mem_q3));
    Tensor mpos = View(s.mpos, Shape{T});
    const bool on_device = s.mpos_dev.defined();
    // Layers share one query position: it goes up to a device once, not once per layer.
    if (!on_device || s.mpos_dev_value != memory->query_position || s.mpos_dev_rows < T) {
      std::fill(mpos.data_as<int32_t>(), mpos.data_as<int32_t>() + T,
                static_cast<int32_t>(memory->query_position));
      if (on_device) {
        Tensor dev = View(s.mpos_dev, Shape{T});
        RETURN_IF_ERROR(be->Transfer(mpos, &dev));
        s.mpos_dev_value = memory->query_position;
        s.mpos_dev_rows = T;
      }
    }
    if (on_device) mpos = View(s.mpos_dev, Shape{T});
    RETURN_IF_ERROR(be->Rope(mem_q3, mpos, config_.rope, &mem_q3));
  }
  Tensor keys = k3;
  Tensor values = v3;
  const int slot = cache != nullptr ? cache->slot_layout().Slot(layer, iteration) : 0;
  Tensor k_slots, v_slots;
  if (cache != nullptr) {
    k_slots = cache->KeySlots(slot, *update);
    v_slots = cache->ValueSlots(slot, *update);
  }
  if (fuse && cache != nullptr) {
    RETURN_IF_ERROR(be->RopeAndStoreKv(pos, config_.rope, &q3, &k3, v3, &k_slots, &v_slots));
  } else {
    RETURN_IF_ERROR(be->Rope(q3, pos, config_.rope, &q3));
    RETURN_IF_ERROR(be->Rope(k3, pos, config_.rope, &k3));
    observe("q", q3);
    if (cache != nullptr) {
      RETURN_IF_ERROR(be->Copy(k3, &k_slots));
      RETURN_IF_ERROR(be->Copy(v3, &v_slots));
    }
  }
  if (cache != nullptr) {
    keys = cache->Keys(slot, update->begin + update->n);
    values = cache->Values(slot, update->begin + update->n);
  }
  Tensor mem_k, mem_v;
  if (memory != nullptr) {
    mem_k = memory->k;
    mem_v = memory->v;
  }
  AttentionParams ap;
  ap.causal = true;
  if (mem_q3.defined()) ap.mem_q = &mem_q3;
  if (memory != nullptr && !w.mem_bias.empty()) ap.mem_bias = w.mem_bias.data();
  Status st = be->Attention(q3, keys, values, mem_k, mem_v, ap, &att3);
  if (!st.ok()) return st.WithContext("layer " + std::to_string(layer) + " attention");
  if (fuse) {
    RETURN_IF_ERROR(be->MatMulAdd(att2, w.wo, &h));
  } else {
    RETURN_IF_ERROR(be->MatMul(att2, w.wo, &proj));
    observe("attn_out", proj);
    RETURN_IF_ERROR(be->Add(h, proj, &h));
  }
  if (sandwich) RETURN_IF_ERROR(be->RmsNorm(h, w.attn_post_norm, config_.norm_eps, &h));

  // ---- MLP ----
  {
    const Tensor* gate_up_w[] = {&w.w_gate, &w.w_up};
    Tensor* gate_up_out[] = {&gate, &up};
    if (fuse) {
      RETURN_IF_ERROR(
          be->RmsNormMatMulShared(h, w.ffn_norm, config_.norm_eps, gate_up_w, gate_up_out));
    } else {
      RETURN_IF_ERROR(be->RmsNorm(h, w.ffn_norm, config_.norm_eps, &x));
      observe("ffn_norm", x);
      RETURN_IF_ERROR(be->MatMulShared(x, gate_up_w, gate_up_out));
    }
  }
  if (fuse) {
    RETURN_IF_ERROR(be->SwiGluMatMulAdd(gate, up, w.w_down, &h));
  } else {
    RETURN_IF_ERROR(be->SwiGlu(gate, up, &gate));
    RETURN_IF_ERROR(be->MatMul(gate, w.w_down, &proj));
    observe("mlp_out", proj);
    RETURN_IF_ERROR(be->Add(h, proj, &h));
  }
  if (sandwich) RETURN_IF_ERROR(be->RmsNorm(h, w.ffn_post_norm, config_.norm_eps, &h));
  observe("hidden", h);
  return Status::Ok();
}

Status Model::RunStage(const Stage& stage, int32_t iteration, int64_t n_tokens,
                       const Tensor& positions, KvCache* cache, const KvUpdate* update,
                       const ForwardOptions& options, ForwardResult* result, bool* done) {
  for (int32_t layer = stage.first; layer < stage.end; ++layer) {
    if (options.last_layer >= 0 && layer > options.last_layer) {
      *done = true;
      return Status::Ok();
    }
    if (host_layers_ > 0 && layer == host_layers_) RETURN_IF_ERROR(CrossToDevice(n_tokens));
    RETURN_IF_ERROR(
        RunLayer(layer, iteration, n_tokens, positions, cache, update, options, result));
  }
  return Status::Ok();
}

Status Model::CrossToDevice(int64_t n_tokens) {
  const Shape shape{n_tokens, config_.n_embd};
  Tensor dev = View(scratch_->h, shape);
  return backend_->Transfer(View(host_scratch_->h, shape), &dev)
      .WithContext("moving the residual stream to " + backend_->device().ToString());
}

Status Model::Head(int64_t first, int64_t n_tokens, const ForwardOptions& options,
                   Tensor* logits) {
  // Only the rows whose logits are wanted go through the final norm and the head.
  Scratch& s = *scratch_;
  const int64_t n = n_tokens - first;
  Tensor h = View(s.h, Shape{n_tokens, config_.n_embd});
  ASSIGN_OR_RETURN(Tensor rows, h.Slice(0, first, n_tokens));  // [n, n_embd]
  Tensor normed = View(s.x, Shape{n, config_.n_embd});         // [n, n_embd]
  RETURN_IF_ERROR(backend_->RmsNorm(rows, weights_.output_norm, config_.norm_eps, &normed));
  if (options.observer) options.observer(Intermediate{"output_norm", -1, normed});
  ASSIGN_OR_RETURN(*logits, backend_->Allocate(DType::kF32, Shape{n, config_.n_vocab}));
  RETURN_IF_ERROR(backend_->MatMul(normed, weights_.output, logits));
  if (options.observer) options.observer(Intermediate{"logits", -1, *logits});
  if (!logits->device().is_cpu()) {  // ForwardResult::logits is a host tensor (samplers read it)
    ASSIGN_OR_RETURN(Tensor host, Tensor::Empty(DType::kF32, logits->shape()));
    RETURN_IF_ERROR(backend_->Transfer(*logits, &host));
    *logits = std::move(host);
  }
  return Status::Ok();
}

StatusOr<ForwardResult> Model::Forward(std::span<const TokenId> ids, KvCache* cache,
                                       const ForwardOptions& options) {
  if (ids.empty()) return InvalidArgumentError("Forward needs at least one token");
  const int64_t T = static_cast<int64_t>(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= config_.n_vocab) {
      return InvalidArgumentError("token id " + std::to_string(ids[i]) + " at index " +
                                  std::to_string(i) + " is outside the vocabulary [0, " +
                                  std::to_string(config_.n_vocab) + ")");
    }
  }
  if (options.capture_layer < -1 || options.capture_layer >= config_.n_layer) {
    return InvalidArgumentError("capture_layer " + std::to_string(options.capture_layer) +
                                " is not a layer of this model (0.." +
                                std::to_string(config_.n_layer - 1) + ")");
  }
  if (options.last_layer < -1 || options.last_layer >= config_.n_layer) {
    return InvalidArgumentError("last_layer " + std::to_string(options.last_layer) +
                                " is not a layer of this model");
  }
  for (size_t i = 0; i < options.capture_layers.size(); ++i) {
    const int32_t l = options.capture_layers[i];
    if (l < 0 || l >= config_.n_layer) {
      return InvalidArgumentError("capture layer " + std::to_string(l) +
                                  " is not a layer of this model (0.." +
                                  std::to_string(config_.n_layer - 1) + ")");
    }
    if (std::find(options.capture_layers.begin(), options.capture_layers.begin() + i, l) !=
        options.capture_layers.begin() + i) {
      return InvalidArgumentError("capture layer " + std::to_string(l) + " is listed twice");
    }
    if (options.last_layer >= 0 && l > options.last_layer) {
      return InvalidArgumentError("capture layer " + std::to_string(l) + " lies above last_layer " +
                                  std::to_string(options.last_layer) +
                                  "; set last_layer to the largest captured layer");
    }
  }
  if (options.last_layer >= 0 && (cache != nullptr || options.compute_logits)) {
    return InvalidArgumentError("last_layer needs a forward without a KV cache and without logits");
  }
  if (options.last_layer >= 0 && options.final_states) {
    return InvalidArgumentError("final_states needs every layer; drop last_layer");
  }
  if (options.steps < 0 || options.steps > (1 << 16)) {
    return InvalidArgumentError("recurrent steps must be in 1..65536 (0 = the model's default " +
                                std::to_string(default_steps()) + "), got " +
                                std::to_string(options.steps));
  }
  const int32_t steps = options.steps > 0 ? options.steps : default_steps();
  if (cache != nullptr) {
    const KvSlotLayout& sl = cache->slot_layout();
    const KvSlotLayout want = SlotLayoutFor(KvCacheOptions{});
    if (cache->n_head_kv() != config_.n_head_kv || cache->head_dim() != config_.head_dim ||
        sl.n_prelude != want.n_prelude || sl.n_core != want.n_core || sl.n_coda != want.n_coda) {
      return InvalidArgumentError("the KV cache was made for a different model shape");
    }
    if (is_recurrent() && !sl.SupportsSteps(steps)) {
      return InvalidArgumentError("the KV cache has " + sl.ToString() + " slots for " +
                                  std::to_string(sl.max_steps) + " core iterations, but " +
                                  std::to_string(steps) +
                                  " were asked; make the cache with max_steps >= steps or share "
                                  "slots (compress-sK)");
    }
    if (!is_recurrent() && steps != 1) {
      return InvalidArgumentError("a KV cache of a non-recurrent model has one slot per layer; "
                                  "steps must be 1, got " + std::to_string(steps));
    }
  }
  const bool has_adapter = weights_.adapter.defined();
  if (options.init_state.defined()) {
    if (!has_adapter) {
      return InvalidArgumentError("an initial recurrent state needs a model with an "
                                  "input-injection adapter (Huginn)");
    }
    if (options.init_state.dtype() != DType::kF32 ||
        !(options.init_state.shape() == Shape{T, config_.n_embd})) {
      return InvalidArgumentError("the initial state must be f32 [" + std::to_string(T) + ", " +
                                  std::to_string(config_.n_embd) + "], got " +
                                  options.init_state.DebugString());
    }
  }

  // Step 1 of the cache update: reserve (may fail, changes nothing).
  KvUpdate update;
  int64_t start = options.start_pos;
  if (cache != nullptr) {
    ASSIGN_OR_RETURN(update, cache->Prepare(ids));
    start = update.begin;
  }
  if (start < 0 || start + T > int64_t{INT32_MAX}) {
    return InvalidArgumentError("positions " + std::to_string(start) + ".." +
                                std::to_string(start + T) + " do not fit int32");
  }

  RETURN_IF_ERROR(EnsureScratch(T));
  Scratch& s = *scratch_;
  Tensor ids_t = View(s.ids, Shape{T});
  Tensor pos_t = View(s.pos, Shape{T});
  for (int64_t t = 0; t < T; ++t) {
    ids_t.data_as<int32_t>()[t] = ids[static_cast<size_t>(t)];
    pos_t.data_as<int32_t>()[t] = static_cast<int32_t>(start + t);
  }
  if (host_layers_ > 0) {  // the host layers' copy (RunLayer reads it there)
    std::copy_n(pos_t.data_as<const int32_t>(), T, host_scratch_->pos.data_as<int32_t>());
  }
  if (s.pos_dev.defined()) {
    Tensor dev = View(s.pos_dev, Shape{T});
    RETURN_IF_ERROR(backend_->Transfer(pos_t, &dev));
    pos_t = dev;
  }
  const int64_t n_embd = config_.n_embd;
  // The embeddings on layer 0's backend (the host's when split); the stack's residual stream
  // ends in the device scratch (Head, final states and the recurrent core use `h` below).
  Backend* const embd_be = LayerBackend(0);
  Tensor h0 = View(ScratchOf(0).h, Shape{T, n_embd});
  RETURN_IF_ERROR(embd_be->GetRows(weights_.tok_embd, ids_t, &h0));
  if (config_.embd_scale != 1.0f) RETURN_IF_ERROR(embd_be->Scale(h0, config_.embd_scale, &h0));
  if (options.observer) options.observer(Intermediate{"embeddings", -1, h0});
  Tensor h = View(s.h, Shape{T, n_embd});  // [T, n_embd]

  ForwardResult result;
  result.captured.resize(options.capture_layers.size());
  const bool recurrent = is_recurrent();
  bool done = false;
  const std::vector<Stage>& stages = layout_.stages;
  for (size_t si = 0; si < stages.size() && !done; ++si) {
    const Stage& stage = stages[si];
    if (!(recurrent && &stage == layout_.core())) {
      RETURN_IF_ERROR(RunStage(stage, 0, T, pos_t, cache, &update, options, &result, &done));
      continue;
    }
    // ---- the recurrent core ----
    Tensor e = View(s.e, Shape{T, n_embd});
    Tensor saved = View(s.saved, Shape{T, n_embd});
    RETURN_IF_ERROR(backend_->Copy(h, &e));
    if (options.observer) options.observer(Intermediate{"prelude_out", -1, e});
    Tensor cat, cat_s, cat_e;
    if (has_adapter) {
      cat = View(s.cat, Shape{T, 2 * n_embd});                   // [T, 2·n_embd] = [s ; e]
      ASSIGN_OR_RETURN(cat_s, cat.Slice(1, 0, n_embd));
      ASSIGN_OR_RETURN(cat_e, cat.Slice(1, n_embd, 2 * n_embd));
      RETURN_IF_ERROR(backend_->Copy(e, &cat_e));
      if (options.init_state.defined()) {
        RETURN_IF_ERROR(backend_->Transfer(options.init_state, &saved));
        RETURN_IF_ERROR(backend_->Copy(saved, &cat_s));
      } else {
        RETURN_IF_ERROR(backend_->Scale(e, 0.0f, &saved));       // zeros, same shape
        RETURN_IF_ERROR(backend_->Copy(saved, &cat_s));
      }
    }
    Tensor step_logits;
    int32_t ran = 0;
    for (int32_t it = 0; it < steps && !done; ++it) {
      if (has_adapter) {
        if (it > 0) RETURN_IF_ERROR(backend_->Copy(h, &cat_s));
        RETURN_IF_ERROR(backend_->MatMul(cat, weights_.adapter, &h));
        if (options.observer) options.observer(Intermediate{"adapter_out", -1, h, it});
      }
      RETURN_IF_ERROR(RunStage(stage, it, T, pos_t, cache, &update, options, &result, &done));
      ran = it + 1;
      if (done) break;
      if (options.observer) options.observer(Intermediate{"state", -1, h, it});
      if (!options.on_step) continue;
      const Tensor* logits_ptr = nullptr;
      if (options.step_logits) {
        // Read out the current state through the coda without disturbing it.
        RETURN_IF_ERROR(backend_->Copy(h, &saved));
        if (config_.latent_norm) {
          RETURN_IF_ERROR(backend_->RmsNorm(h, weights_.output_norm, config_.norm_eps, &h));
        }
        ForwardOptions quiet = options;
        quiet.observer = nullptr;
        quiet.capture_layer = -1;
        quiet.capture_layers.clear();
        ForwardResult scratch_result;
        for (size_t sj = si + 1; sj < stages.size(); ++sj) {
          bool unused = false;
          RETURN_IF_ERROR(RunStage(stages[sj], 0, T, pos_t, cache, &update, quiet,
                                   &scratch_result, &unused));
        }
        RETURN_IF_ERROR(Head(T - 1, T, quiet, &step_logits));
        logits_ptr = &step_logits;
        RETURN_IF_ERROR(backend_->Copy(saved, &h));
      }
      ASSIGN_OR_RETURN(bool stop, options.on_step(StepView{it + 1, h, logits_ptr}));
      if (stop) break;
    }
    result.steps = ran;
    // Under full sharing, iterations the token did not run read its deepest one (latest-m4).
    if (cache != nullptr && ran > 0) {
      const KvSlotLayout& sl = cache->slot_layout();
      if (sl.share == KvShare::kFull) {
        for (int32_t it = ran; it < sl.max_steps; ++it) {
          for (int32_t layer = stage.first; layer < stage.end; ++layer) {
            const int from = sl.Slot(layer, ran - 1), to = sl.Slot(layer, it);
            Tensor k_from = cache->KeySlots(from, update), k_to = cache->KeySlots(to, update);
            Tensor v_from = cache->ValueSlots(from, update), v_to = cache->ValueSlots(to, update);
            RETURN_IF_ERROR(backend_->Copy(k_from, &k_to));
            RETURN_IF_ERROR(backend_->Copy(v_from, &v_to));
          }
        }
      }
    }
    if (done) break;
    ASSIGN_OR_RETURN(result.state, Tensor::Empty(DType::kF32, Shape{T, n_embd}));
    RETURN_IF_ERROR(backend_->Transfer(h, &result.state));
    if (config_.latent_norm) {
      RETURN_IF_ERROR(backend_->RmsNorm(h, weights_.output_norm, config_.norm_eps, &h));
    }
    if (options.observer) options.observer(Intermediate{"latent", -1, h});
    ASSIGN_OR_RETURN(result.latent, Tensor::Empty(DType::kF32, Shape{T, n_embd}));
    RETURN_IF_ERROR(backend_->Transfer(h, &result.latent));
  }

  if (options.final_states) {
    // Every row through the final norm (the head itself is not run here; Head re-norms its rows).
    ASSIGN_OR_RETURN(Tensor normed, backend_->Allocate(DType::kF32, Shape{T, n_embd}));
    RETURN_IF_ERROR(backend_->RmsNorm(h, weights_.output_norm, config_.norm_eps, &normed));
    ASSIGN_OR_RETURN(result.final_states, Tensor::Empty(DType::kF32, Shape{T, n_embd}));
    RETURN_IF_ERROR(backend_->Transfer(normed, &result.final_states));
  }
  if (options.compute_logits) {
    RETURN_IF_ERROR(Head(options.all_logits ? 0 : T - 1, T, options, &result.logits));
  }

  // Step 2: the forward succeeded, commit the new K/V.
  if (cache != nullptr) cache->Apply(update);
  return result;
}

}  // namespace muninn::model
