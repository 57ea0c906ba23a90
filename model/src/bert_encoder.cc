// BertEncoder: construction, the encoder stack and pooling (loading a folder: bert_encoder_load.cc).
#include "muninn/model/bert_encoder.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

namespace muninn::model {

namespace {

std::string Dims(const Tensor& t) { return t.defined() ? t.DebugString() : "<missing>"; }

// A matrix (MatMul) or table (GetRows) weight: exact shape, packed rows, a dtype the backend
// computes with.
Status CheckMatrix(Backend* backend, const Tensor& t, const std::string& name, const Shape& want,
                   OpKind op) {
  if (!t.defined()) return InvalidArgumentError("BERT weight " + name + " is missing");
  if (!(t.shape() == want)) {
    return InvalidArgumentError("BERT weight " + name + " has shape " + t.shape().ToString() +
                                ", expected " + want.ToString());
  }
  if (!t.rows_contiguous()) {
    return InvalidArgumentError("BERT weight " + name + " must have packed rows: " + Dims(t));
  }
  if (!backend->SupportsOp(OpDesc{op, t.dtype()})) {
    return UnimplementedError("BERT weight " + name + " has dtype " +
                              std::string(DTypeName(t.dtype())) + ", which backend " +
                              backend->name() + " cannot use for this op");
  }
  return Status::Ok();
}

// A bias or norm weight [n]: checked, then converted to a contiguous f32 tensor when it is not
// one already (LayerNorm and Add take f32 only).
Status CheckVectorToF32(Backend* backend, Tensor* t, const std::string& name, int64_t n) {
  if (!t->defined()) return InvalidArgumentError("BERT weight " + name + " is missing");
  if (!(t->shape() == Shape{n})) {
    return InvalidArgumentError("BERT weight " + name + " has shape " + t->shape().ToString() +
                                ", expected [" + std::to_string(n) + "]");
  }
  if (t->dtype() == DType::kF32 && t->is_contiguous()) return Status::Ok();
  if (!backend->SupportsOp(OpDesc{OpKind::kCopy, DType::kF32})) {
    return UnimplementedError("backend " + backend->name() + " cannot convert BERT weight " +
                              name + " (" + Dims(*t) + ") to f32");
  }
  ASSIGN_OR_RETURN(Tensor f32, backend->Allocate(DType::kF32, Shape{n}));
  Status st = backend->Copy(*t, &f32);
  if (!st.ok()) return st.WithContext("converting BERT weight " + name + " to f32");
  *t = std::move(f32);
  return Status::Ok();
}

// Rows [begin, begin + n) of a [cap, ...] scratch buffer, reshaped to `shape` (shape[0] == n).
Tensor Rows(const Tensor& buf, int64_t begin, const Shape& shape) {
  auto rows = buf.Slice(0, begin, begin + shape[0]);
  MUNINN_CHECK(rows.ok()) << rows.status();
  auto v = rows->Reshape(shape);
  MUNINN_CHECK(v.ok()) << v.status();
  return std::move(v).value();
}

}  // namespace

Status BertConfig::Validate() const {
  if (n_vocab <= 0 || n_embd <= 0 || n_layer <= 0 || n_head <= 0 || n_ff <= 0 || n_pos <= 0 ||
      n_token_type <= 0) {
    return InvalidArgumentError(
        "BERT config needs positive vocab_size, hidden_size, num_hidden_layers, "
        "num_attention_heads, intermediate_size, max_position_embeddings, type_vocab_size; got " +
        std::to_string(n_vocab) + ", " + std::to_string(n_embd) + ", " + std::to_string(n_layer) +
        ", " + std::to_string(n_head) + ", " + std::to_string(n_ff) + ", " +
        std::to_string(n_pos) + ", " + std::to_string(n_token_type));
  }
  if (n_embd % n_head != 0) {
    return InvalidArgumentError("BERT hidden_size " + std::to_string(n_embd) +
                                " is not a multiple of num_attention_heads " +
                                std::to_string(n_head));
  }
  if (!(norm_eps >= 0.0f) || norm_eps > 1.0f) {
    return InvalidArgumentError("BERT layer_norm_eps must be in [0, 1], got " +
                                std::to_string(norm_eps));
  }
  if (max_tokens < 0 || max_tokens > n_pos) {
    return InvalidArgumentError("BERT max_tokens " + std::to_string(max_tokens) +
                                " must be in [0, max_position_embeddings = " +
                                std::to_string(n_pos) + "]");
  }
  return Status::Ok();
}

Status BertEncoderOptions::Validate() const {
  if (backend == nullptr) return InvalidArgumentError("BertEncoderOptions.backend is null");
  if (max_tokens < 0) {
    return InvalidArgumentError("BertEncoderOptions.max_tokens must be >= 0 (0: the model's own), "
                                "got " + std::to_string(max_tokens));
  }
  if (max_batch_tokens < 1) {
    return InvalidArgumentError("BertEncoderOptions.max_batch_tokens must be >= 1, got " +
                                std::to_string(max_batch_tokens));
  }
  return Status::Ok();
}

// Working buffers for `capacity` tokens, reused while a batch fits.
struct BertEncoder::Scratch {
  int64_t capacity = 0;
  Tensor h;    // [cap, n_embd] hidden states
  Tensor tmp;  // [cap, n_embd] sub-block output + residual, before its LayerNorm
  Tensor q;    // [cap, n_embd] = [cap, n_head, hd]
  Tensor k;    // [cap, n_embd]
  Tensor v;    // [cap, n_embd]
  Tensor att;  // [cap, n_embd] attention output
  Tensor ff;   // [cap, n_ff]
  Tensor ids;  // [cap] i32 token ids (host: GetRows reads them there)
  Tensor pos;  // [cap] i32 positions, restarting at 0 for each text
};

BertEncoder::BertEncoder(const BertEncoderOptions& options, const BertConfig& config,
                         BertWeights weights, std::unique_ptr<Tokenizer> tokenizer)
    : options_(options), config_(config), weights_(std::move(weights)),
      tokenizer_(std::move(tokenizer)) {}

BertEncoder::~BertEncoder() = default;

StatusOr<std::unique_ptr<BertEncoder>> BertEncoder::Create(const BertEncoderOptions& options,
                                                           const BertConfig& config_in,
                                                           BertWeights weights,
                                                           std::unique_ptr<Tokenizer> tokenizer) {
  RETURN_IF_ERROR(options.Validate());
  RETURN_IF_ERROR(config_in.Validate());
  BertConfig config = config_in;
  if (options.max_tokens > config.n_pos) {
    return InvalidArgumentError("max_tokens " + std::to_string(options.max_tokens) +
                                " exceeds the model's max_position_embeddings " +
                                std::to_string(config.n_pos));
  }
  if (options.max_tokens > 0) config.max_tokens = options.max_tokens;
  if (config.max_tokens == 0) config.max_tokens = config.n_pos;

  Backend* b = options.backend;
  const int64_t d = config.n_embd;
  const int64_t ff = config.n_ff;
  RETURN_IF_ERROR(CheckMatrix(b, weights.word_embd, "embeddings.word_embeddings.weight",
                              Shape{config.n_vocab, d}, OpKind::kGetRows));
  RETURN_IF_ERROR(CheckMatrix(b, weights.pos_embd, "embeddings.position_embeddings.weight",
                              Shape{config.n_pos, d}, OpKind::kGetRows));
  RETURN_IF_ERROR(CheckMatrix(b, weights.type_embd, "embeddings.token_type_embeddings.weight",
                              Shape{config.n_token_type, d}, OpKind::kGetRows));
  RETURN_IF_ERROR(CheckVectorToF32(b, &weights.emb_ln_w, "embeddings.LayerNorm.weight", d));
  RETURN_IF_ERROR(CheckVectorToF32(b, &weights.emb_ln_b, "embeddings.LayerNorm.bias", d));
  if (weights.layers.size() != static_cast<size_t>(config.n_layer)) {
    return InvalidArgumentError("BERT has " + std::to_string(weights.layers.size()) +
                                " layers of weights, config says " +
                                std::to_string(config.n_layer));
  }
  for (int32_t i = 0; i < config.n_layer; ++i) {
    BertLayerWeights& l = weights.layers[static_cast<size_t>(i)];
    const std::string p = "encoder.layer." + std::to_string(i) + ".";
    struct Matrix {
      const Tensor* t;
      const char* name;
      Shape shape;
    };
    const Matrix matrices[] = {
        {&l.wq, "attention.self.query.weight", Shape{d, d}},
        {&l.wk, "attention.self.key.weight", Shape{d, d}},
        {&l.wv, "attention.self.value.weight", Shape{d, d}},
        {&l.wo, "attention.output.dense.weight", Shape{d, d}},
        {&l.w_up, "intermediate.dense.weight", Shape{ff, d}},
        {&l.w_down, "output.dense.weight", Shape{d, ff}},
    };
    for (const Matrix& m : matrices) {
      RETURN_IF_ERROR(CheckMatrix(b, *m.t, p + m.name, m.shape, OpKind::kMatMul));
    }
    struct Vector {
      Tensor* t;
      const char* name;
      int64_t n;
    };
    const Vector vectors[] = {
        {&l.bq, "attention.self.query.bias", d},
        {&l.bk, "attention.self.key.bias", d},
        {&l.bv, "attention.self.value.bias", d},
        {&l.bo, "attention.output.dense.bias", d},
        {&l.attn_ln_w, "attention.output.LayerNorm.weight", d},
        {&l.attn_ln_b, "attention.output.LayerNorm.bias", d},
        {&l.b_up, "intermediate.dense.bias", ff},
        {&l.b_down, "output.dense.bias", d},
        {&l.ffn_ln_w, "output.LayerNorm.weight", d},
        {&l.ffn_ln_b, "output.LayerNorm.bias", d},
    };
    for (const Vector& v : vectors) {
      RETURN_IF_ERROR(CheckVectorToF32(b, v.t, p + v.name, v.n));
    }
  }
  if (tokenizer != nullptr && tokenizer->vocab_size() > config.n_vocab) {
    return InvalidArgumentError("the tokenizer has " + std::to_string(tokenizer->vocab_size()) +
                                " tokens but the model's vocab_size is " +
                                std::to_string(config.n_vocab));
  }

  std::unique_ptr<BertEncoder> enc(
      new BertEncoder(options, config, std::move(weights), std::move(tokenizer)));
  // Single sentences use token type 0 everywhere: look its row up once.
  ASSIGN_OR_RETURN(Tensor type_id, Tensor::Zeros(DType::kI32, Shape{1}));
  ASSIGN_OR_RETURN(Tensor type_row, b->Allocate(DType::kF32, Shape{1, d}));
  RETURN_IF_ERROR(b->GetRows(enc->weights_.type_embd, type_id, &type_row));
  ASSIGN_OR_RETURN(enc->type_row_, type_row.Reshape(Shape{d}));
  if (enc->tokenizer_ != nullptr) {
    // [CLS] [SEP] for BERT vocabularies: the last one is the suffix truncation must keep.
    const std::vector<TokenId> specials =
        enc->tokenizer_->Encode("", /*add_special=*/true, /*parse_special=*/false);
    enc->n_special_suffix_ = specials.size() >= 2 ? 1 : 0;
  }
  return enc;
}

StatusOr<std::vector<TokenId>> BertEncoder::Tokenize(std::string_view text) const {
  if (tokenizer_ == nullptr) {
    return FailedPreconditionError("this BertEncoder was created without a tokenizer; use "
                                   "EmbedIds");
  }
  // parse_special: Hugging Face tokenizers match "[SEP]" etc. in the text as special tokens.
  std::vector<TokenId> ids = tokenizer_->Encode(text, /*add_special=*/true,
                                                /*parse_special=*/true);
  const size_t max = static_cast<size_t>(config_.max_tokens);
  if (ids.size() > max) {
    const size_t suffix = std::min(n_special_suffix_, max);
    std::copy(ids.end() - static_cast<std::ptrdiff_t>(suffix), ids.end(),
              ids.begin() + static_cast<std::ptrdiff_t>(max - suffix));
    ids.resize(max);
  }
  if (ids.empty()) {
    return InvalidArgumentError("text of " + std::to_string(text.size()) +
                                " bytes gave no tokens (the vocabulary has no [CLS]/[SEP])");
  }
  return ids;
}

StatusOr<std::vector<float>> BertEncoder::Embed(std::span<const std::string> texts) {
  std::vector<std::vector<TokenId>> sequences;
  sequences.reserve(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    auto ids = Tokenize(texts[i]);
    if (!ids.ok()) return ids.status().WithContext("text " + std::to_string(i));
    sequences.push_back(std::move(ids).value());
  }
  return EmbedIds(sequences);
}

Status BertEncoder::CheckSequences(std::span<const std::vector<TokenId>> sequences) const {
  for (size_t i = 0; i < sequences.size(); ++i) {
    const std::vector<TokenId>& s = sequences[i];
    if (s.empty() || s.size() > static_cast<size_t>(config_.max_tokens)) {
      return InvalidArgumentError("sequence " + std::to_string(i) + " has " +
                                  std::to_string(s.size()) + " tokens; BERT takes 1.." +
                                  std::to_string(config_.max_tokens));
    }
    for (size_t t = 0; t < s.size(); ++t) {
      if (s[t] < 0 || s[t] >= config_.n_vocab) {
        return InvalidArgumentError("token id " + std::to_string(s[t]) + " at index " +
                                    std::to_string(t) + " of sequence " + std::to_string(i) +
                                    " is outside the vocabulary [0, " +
                                    std::to_string(config_.n_vocab) + ")");
      }
    }
  }
  return Status::Ok();
}

StatusOr<std::vector<float>> BertEncoder::EmbedIds(
    std::span<const std::vector<TokenId>> sequences) {
  RETURN_IF_ERROR(CheckSequences(sequences));
  const size_t dim = static_cast<size_t>(config_.n_embd);
  std::vector<float> out(sequences.size() * dim);  // [n, dim]
  size_t begin = 0;
  while (begin < sequences.size()) {
    // Greedy packing: as many whole texts as fit in max_batch_tokens (at least one).
    size_t end = begin;
    int64_t tokens = 0;
    while (end < sequences.size() &&
           (end == begin ||
            tokens + static_cast<int64_t>(sequences[end].size()) <= options_.max_batch_tokens)) {
      tokens += static_cast<int64_t>(sequences[end].size());
      ++end;
    }
    const auto batch = sequences.subspan(begin, end - begin);
    ASSIGN_OR_RETURN(Tensor hidden, RunStack(batch, {}));
    Pool(hidden, batch, out.data() + begin * dim);
    begin = end;
  }
  return out;
}

Status BertEncoder::EnsureScratch(int64_t n_tokens) {
  if (scratch_ && scratch_->capacity >= n_tokens) return Status::Ok();
  auto s = std::make_unique<Scratch>();
  s->capacity = n_tokens;
  const int64_t d = config_.n_embd;
  Backend* b = options_.backend;
  for (Tensor* t : {&s->h, &s->tmp, &s->q, &s->k, &s->v, &s->att}) {
    ASSIGN_OR_RETURN(*t, b->Allocate(DType::kF32, Shape{n_tokens, d}));
  }
  ASSIGN_OR_RETURN(s->ff, b->Allocate(DType::kF32, Shape{n_tokens, config_.n_ff}));
  ASSIGN_OR_RETURN(s->ids, Tensor::Empty(DType::kI32, Shape{n_tokens}));
  ASSIGN_OR_RETURN(s->pos, Tensor::Empty(DType::kI32, Shape{n_tokens}));
  scratch_ = std::move(s);
  return Status::Ok();
}

Status BertEncoder::RunLayer(int32_t layer, std::span<const std::vector<TokenId>> sequences) {
  Scratch& s = *scratch_;
  Backend* b = options_.backend;
  const BertLayerWeights& w = weights_.layers[static_cast<size_t>(layer)];
  int64_t n = 0;
  for (const auto& seq : sequences) n += static_cast<int64_t>(seq.size());
  const int64_t d = config_.n_embd;
  const int64_t n_head = config_.n_head;
  const int64_t hd = config_.head_dim();
  Tensor h = Rows(s.h, 0, Shape{n, d});            // [n, n_embd]
  Tensor tmp = Rows(s.tmp, 0, Shape{n, d});        // [n, n_embd]
  Tensor q = Rows(s.q, 0, Shape{n, d});            // [n, n_embd]
  Tensor k = Rows(s.k, 0, Shape{n, d});
  Tensor v = Rows(s.v, 0, Shape{n, d});
  Tensor att = Rows(s.att, 0, Shape{n, d});        // [n, n_embd]
  Tensor ff = Rows(s.ff, 0, Shape{n, config_.n_ff});  // [n, n_ff]

  // ---- self-attention: projections over the whole batch, attention text by text ----
  RETURN_IF_ERROR(b->MatMul(h, w.wq, &q));
  RETURN_IF_ERROR(b->Add(q, w.bq, &q));
  RETURN_IF_ERROR(b->MatMul(h, w.wk, &k));
  RETURN_IF_ERROR(b->Add(k, w.bk, &k));
  RETURN_IF_ERROR(b->MatMul(h, w.wv, &v));
  RETURN_IF_ERROR(b->Add(v, w.bv, &v));
  AttentionParams ap;
  ap.causal = false;  // bidirectional; scale 0 = 1/sqrt(hd)
  int64_t begin = 0;
  for (const auto& seq : sequences) {
    const int64_t t = static_cast<int64_t>(seq.size());
    const Shape heads{t, n_head, hd};
    Tensor att_i = Rows(s.att, begin, heads);  // [t, n_head, hd]
    Status st = b->Attention(Rows(s.q, begin, heads), Rows(s.k, begin, heads),
                             Rows(s.v, begin, heads), Tensor(), Tensor(), ap, &att_i);
    if (!st.ok()) return st.WithContext("BERT layer " + std::to_string(layer) + " attention");
    begin += t;
  }
  RETURN_IF_ERROR(b->MatMul(att, w.wo, &tmp));
  RETURN_IF_ERROR(b->Add(tmp, w.bo, &tmp));
  RETURN_IF_ERROR(b->Add(tmp, h, &tmp));  // residual, then post-norm
  RETURN_IF_ERROR(b->LayerNorm(tmp, w.attn_ln_w, w.attn_ln_b, config_.norm_eps, &h));

  // ---- feed-forward ----
  RETURN_IF_ERROR(b->MatMul(h, w.w_up, &ff));
  RETURN_IF_ERROR(b->Add(ff, w.b_up, &ff));
  RETURN_IF_ERROR(b->Gelu(ff, config_.gelu, &ff));
  RETURN_IF_ERROR(b->MatMul(ff, w.w_down, &tmp));
  RETURN_IF_ERROR(b->Add(tmp, w.b_down, &tmp));
  RETURN_IF_ERROR(b->Add(tmp, h, &tmp));
  RETURN_IF_ERROR(b->LayerNorm(tmp, w.ffn_ln_w, w.ffn_ln_b, config_.norm_eps, &h));
  return Status::Ok();
}

StatusOr<Tensor> BertEncoder::Forward(std::span<const std::vector<TokenId>> sequences,
                                      const BertObserver& observer) {
  ASSIGN_OR_RETURN(Tensor hidden, RunStack(sequences, observer));
  // A copy: `hidden` may be a view of the scratch buffers, which the next call overwrites.
  if (hidden.buffer() != scratch_->h.buffer()) return hidden;
  return hidden.Contiguous();
}

StatusOr<Tensor> BertEncoder::RunStack(std::span<const std::vector<TokenId>> sequences,
                                       const BertObserver& observer) {
  if (sequences.empty()) return InvalidArgumentError("BERT Forward needs at least one sequence");
  RETURN_IF_ERROR(CheckSequences(sequences));
  int64_t n = 0;
  for (const auto& seq : sequences) n += static_cast<int64_t>(seq.size());
  RETURN_IF_ERROR(EnsureScratch(n));
  Scratch& s = *scratch_;
  Backend* b = options_.backend;
  const int64_t d = config_.n_embd;

  Tensor ids = Rows(s.ids, 0, Shape{n});  // [n] i32
  Tensor pos = Rows(s.pos, 0, Shape{n});  // [n] i32
  int64_t row = 0;
  for (const auto& seq : sequences) {
    for (size_t t = 0; t < seq.size(); ++t, ++row) {
      ids.data_as<int32_t>()[row] = seq[t];
      pos.data_as<int32_t>()[row] = static_cast<int32_t>(t);
    }
  }
  Tensor h = Rows(s.h, 0, Shape{n, d});      // [n, n_embd]
  Tensor tmp = Rows(s.tmp, 0, Shape{n, d});  // [n, n_embd]
  RETURN_IF_ERROR(b->GetRows(weights_.word_embd, ids, &tmp));
  RETURN_IF_ERROR(b->GetRows(weights_.pos_embd, pos, &h));
  RETURN_IF_ERROR(b->Add(tmp, h, &tmp));
  RETURN_IF_ERROR(b->Add(tmp, type_row_, &tmp));
  RETURN_IF_ERROR(
      b->LayerNorm(tmp, weights_.emb_ln_w, weights_.emb_ln_b, config_.norm_eps, &h));
  if (observer) observer("embd", -1, h);
  for (int32_t layer = 0; layer < config_.n_layer; ++layer) {
    RETURN_IF_ERROR(RunLayer(layer, sequences));
    if (observer) observer("hidden", layer, h);
  }
  RETURN_IF_ERROR(b->Synchronize());
  if (h.device().is_cpu()) return h;
  ASSIGN_OR_RETURN(Tensor host, Tensor::Empty(DType::kF32, Shape{n, d}));
  RETURN_IF_ERROR(b->Transfer(h, &host));
  return host;
}

void BertEncoder::Pool(const Tensor& hidden, std::span<const std::vector<TokenId>> sequences,
                       float* out) const {
  const int64_t d = config_.n_embd;
  MUNINN_CHECK(hidden.dtype() == DType::kF32 && hidden.is_contiguous() && hidden.dim(1) == d);
  const float* rows = hidden.data_as<const float>();  // [n, n_embd]
  std::vector<double> acc(static_cast<size_t>(d));
  int64_t begin = 0;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const int64_t t = static_cast<int64_t>(sequences[i].size());
    std::fill(acc.begin(), acc.end(), 0.0);
    const int64_t n_pool = config_.pooling == BertPooling::kCls ? 1 : t;
    for (int64_t r = begin; r < begin + n_pool; ++r) {
      const float* x = rows + r * d;
      for (int64_t j = 0; j < d; ++j) acc[static_cast<size_t>(j)] += x[j];
    }
    double scale = 1.0 / static_cast<double>(n_pool);
    if (config_.normalize) {
      double sq = 0.0;
      for (double a : acc) sq += a * a;
      // As torch.nn.functional.normalize: |x| clamped below at 1e-12, here after the mean.
      scale = 1.0 / std::max(std::sqrt(sq) * scale, 1e-12) * scale;
    }
    float* o = out + static_cast<int64_t>(i) * d;
    for (int64_t j = 0; j < d; ++j) o[j] = static_cast<float>(acc[static_cast<size_t>(j)] * scale);
    begin += t;
  }
}

}  // namespace muninn::model
