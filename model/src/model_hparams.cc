#include "muninn/model/model_hparams.h"

#include <algorithm>
#include <sstream>

#include "huginn_hparams.h"

namespace muninn::model {
namespace {

using R = WeightRole;

constexpr WeightRole kLlamaTied[] = {R::kTokenEmbd, R::kOutputNorm, R::kAttnNorm, R::kAttnQ,
                                     R::kAttnK,     R::kAttnV,      R::kAttnOut,  R::kFfnNorm,
                                     R::kFfnGate,   R::kFfnUp,      R::kFfnDown};
constexpr WeightRole kLlamaUntied[] = {R::kTokenEmbd, R::kOutputNorm, R::kOutput,  R::kAttnNorm,
                                       R::kAttnQ,     R::kAttnK,      R::kAttnV,   R::kAttnOut,
                                       R::kFfnNorm,   R::kFfnGate,    R::kFfnUp,   R::kFfnDown};
constexpr WeightRole kBert[] = {
    R::kTokenEmbd,   R::kPosEmbd,      R::kTokenTypes,      R::kEmbdNorm,    R::kEmbdNormBias,
    R::kAttnQ,       R::kAttnQBias,    R::kAttnK,           R::kAttnKBias,   R::kAttnV,
    R::kAttnVBias,   R::kAttnOut,      R::kAttnOutBias,     R::kAttnOutNorm, R::kAttnOutNormBias,
    R::kFfnUp,       R::kFfnUpBias,    R::kFfnDown,         R::kFfnDownBias, R::kLayerOutNorm,
    R::kLayerOutNormBias};

// GGUF tensor names (llama.cpp's), without "blk.N." for per-layer roles.
std::string_view GgufName(WeightRole role) {
  switch (role) {
    case R::kTokenEmbd: return "token_embd.weight";
    case R::kPosEmbd: return "position_embd.weight";
    case R::kTokenTypes: return "token_types.weight";
    case R::kEmbdNorm: return "token_embd_norm.weight";
    case R::kEmbdNormBias: return "token_embd_norm.bias";
    case R::kOutputNorm: return "output_norm.weight";
    case R::kOutput: return "output.weight";
    case R::kAdapter: return "adapter.weight";
    case R::kAttnQkv: return "attn_qkv.weight";
    case R::kAttnQkBias: return "attn_qk_bias";
    case R::kAttnPostNorm: return "attn_post_norm.weight";
    case R::kFfnGateUp: return "ffn_gate_up.weight";
    case R::kFfnPostNorm: return "ffn_post_norm.weight";
    case R::kAttnNorm: return "attn_norm.weight";
    case R::kAttnQ: return "attn_q.weight";
    case R::kAttnQBias: return "attn_q.bias";
    case R::kAttnK: return "attn_k.weight";
    case R::kAttnKBias: return "attn_k.bias";
    case R::kAttnV: return "attn_v.weight";
    case R::kAttnVBias: return "attn_v.bias";
    case R::kAttnOut: return "attn_output.weight";
    case R::kAttnOutBias: return "attn_output.bias";
    case R::kAttnOutNorm: return "attn_output_norm.weight";
    case R::kAttnOutNormBias: return "attn_output_norm.bias";
    case R::kFfnNorm: return "ffn_norm.weight";
    case R::kFfnGate: return "ffn_gate.weight";
    case R::kFfnUp: return "ffn_up.weight";
    case R::kFfnUpBias: return "ffn_up.bias";
    case R::kFfnDown: return "ffn_down.weight";
    case R::kFfnDownBias: return "ffn_down.bias";
    case R::kLayerOutNorm: return "layer_output_norm.weight";
    case R::kLayerOutNormBias: return "layer_output_norm.bias";
  }
  return "";
}

// Hugging Face LlamaForCausalLM names, without "model.layers.N." for per-layer roles.
std::string_view HfLlamaName(WeightRole role) {
  switch (role) {
    case R::kTokenEmbd: return "model.embed_tokens.weight";
    case R::kOutputNorm: return "model.norm.weight";
    case R::kOutput: return "lm_head.weight";
    case R::kAttnNorm: return "input_layernorm.weight";
    case R::kAttnQ: return "self_attn.q_proj.weight";
    case R::kAttnK: return "self_attn.k_proj.weight";
    case R::kAttnV: return "self_attn.v_proj.weight";
    case R::kAttnOut: return "self_attn.o_proj.weight";
    case R::kFfnNorm: return "post_attention_layernorm.weight";
    case R::kFfnGate: return "mlp.gate_proj.weight";
    case R::kFfnUp: return "mlp.up_proj.weight";
    case R::kFfnDown: return "mlp.down_proj.weight";
    default: return "";
  }
}

// Hugging Face BertModel names, without the optional "bert." prefix and "encoder.layer.N.".
std::string_view HfBertName(WeightRole role) {
  switch (role) {
    case R::kTokenEmbd: return "embeddings.word_embeddings.weight";
    case R::kPosEmbd: return "embeddings.position_embeddings.weight";
    case R::kTokenTypes: return "embeddings.token_type_embeddings.weight";
    case R::kEmbdNorm: return "embeddings.LayerNorm.weight";
    case R::kEmbdNormBias: return "embeddings.LayerNorm.bias";
    case R::kAttnQ: return "attention.self.query.weight";
    case R::kAttnQBias: return "attention.self.query.bias";
    case R::kAttnK: return "attention.self.key.weight";
    case R::kAttnKBias: return "attention.self.key.bias";
    case R::kAttnV: return "attention.self.value.weight";
    case R::kAttnVBias: return "attention.self.value.bias";
    case R::kAttnOut: return "attention.output.dense.weight";
    case R::kAttnOutBias: return "attention.output.dense.bias";
    case R::kAttnOutNorm: return "attention.output.LayerNorm.weight";
    case R::kAttnOutNormBias: return "attention.output.LayerNorm.bias";
    case R::kFfnUp: return "intermediate.dense.weight";
    case R::kFfnUpBias: return "intermediate.dense.bias";
    case R::kFfnDown: return "output.dense.weight";
    case R::kFfnDownBias: return "output.dense.bias";
    case R::kLayerOutNorm: return "output.LayerNorm.weight";
    case R::kLayerOutNormBias: return "output.LayerNorm.bias";
    default: return "";
  }
}

Status ParseRopeScaling(const std::string& type, double factor, int64_t original_ctx,
                        const std::string& where, RopeParams* rope) {
  if (type.empty() || type == "none" || type == "default") {
    rope->scaling = RopeScaling::kNone;
    return Status::Ok();
  }
  if (type == "linear") {
    rope->scaling = RopeScaling::kLinear;
  } else if (type == "yarn") {
    rope->scaling = RopeScaling::kYarn;
  } else {
    return UnimplementedError(where + ": RoPE scaling type '" + type +
                              "' is not supported (muninn implements none, linear and yarn)");
  }
  if (!(factor > 0.0)) {
    return InvalidArgumentError(where + ": RoPE scaling factor must be > 0, got " +
                                std::to_string(factor));
  }
  if (original_ctx <= 0 || original_ctx > (int64_t{1} << 24)) {
    return InvalidArgumentError(where + ": RoPE original context " +
                                std::to_string(original_ctx) + " is out of range");
  }
  rope->factor = static_cast<float>(factor);
  rope->original_ctx = static_cast<int>(original_ctx);
  return Status::Ok();
}

StatusOr<ModelHParams> ReadGgufLlama(const Checkpoint& c, const std::string& arch) {
  ModelHParams hp;
  hp.arch = ModelArch::kLlama;
  hp.format = CheckpointFormat::kGguf;
  const std::string p = arch + ".";
  ASSIGN_OR_RETURN(hp.n_embd, c.GetInt(p + "embedding_length"));
  ASSIGN_OR_RETURN(hp.n_layer, c.GetInt(p + "block_count"));
  ASSIGN_OR_RETURN(hp.n_head, c.GetInt(p + "attention.head_count"));
  ASSIGN_OR_RETURN(hp.n_head_kv, c.GetIntOr(p + "attention.head_count_kv", hp.n_head));
  ASSIGN_OR_RETURN(hp.n_ff, c.GetInt(p + "feed_forward_length"));
  ASSIGN_OR_RETURN(hp.n_ctx_train, c.GetInt(p + "context_length"));
  ASSIGN_OR_RETURN(double eps, c.GetFloat(p + "attention.layer_norm_rms_epsilon"));
  hp.norm_eps = static_cast<float>(eps);
  const int64_t default_head = hp.n_head > 0 ? hp.n_embd / hp.n_head : 0;
  ASSIGN_OR_RETURN(hp.n_embd_head, c.GetIntOr(p + "attention.key_length", default_head));
  ASSIGN_OR_RETURN(int64_t n_rot, c.GetIntOr(p + "rope.dimension_count", hp.n_embd_head));
  if (n_rot < 0 || n_rot > 65536) {
    return InvalidArgumentError(c.path() + ": rope.dimension_count " + std::to_string(n_rot) +
                                " is out of range");
  }
  hp.rope.n_rot = static_cast<int>(n_rot);
  ASSIGN_OR_RETURN(double base, c.GetFloatOr(p + "rope.freq_base", 10000.0));
  hp.rope.freq_base = static_cast<float>(base);
  // Q/K rows were permuted by the converter: adjacent-pair rotation (see the header comment).
  hp.rope.layout = RopeLayout::kInterleaved;
  ASSIGN_OR_RETURN(std::string scaling, c.GetStringOr(p + "rope.scaling.type", "none"));
  ASSIGN_OR_RETURN(double factor, c.GetFloatOr(p + "rope.scaling.factor", 1.0));
  ASSIGN_OR_RETURN(int64_t orig,
                   c.GetIntOr(p + "rope.scaling.original_context_length", hp.n_ctx_train));
  RETURN_IF_ERROR(ParseRopeScaling(scaling, factor, orig, c.path(), &hp.rope));

  const TensorInfo* embd = c.FindTensor("token_embd.weight");
  int64_t vocab_fallback = embd != nullptr && embd->shape.ndim() == 2 ? embd->shape[0] : -1;
  if (const MetadataValue* toks = c.FindMetadata("tokenizer.ggml.tokens");
      toks != nullptr && toks->is_array() && vocab_fallback < 0) {
    vocab_fallback = static_cast<int64_t>(toks->array_size());
  }
  if (c.FindMetadata(p + "vocab_size") != nullptr || vocab_fallback < 0) {
    ASSIGN_OR_RETURN(hp.n_vocab, c.GetInt(p + "vocab_size"));
  } else {
    hp.n_vocab = vocab_fallback;
  }
  hp.tied_embeddings = c.FindTensor("output.weight") == nullptr;
  return hp;
}

StatusOr<ModelHParams> ReadHfLlama(const Checkpoint& c) {
  ModelHParams hp;
  hp.arch = ModelArch::kLlama;
  hp.format = CheckpointFormat::kHuggingFace;
  ASSIGN_OR_RETURN(hp.n_vocab, c.GetInt("vocab_size"));
  ASSIGN_OR_RETURN(hp.n_embd, c.GetInt("hidden_size"));
  ASSIGN_OR_RETURN(hp.n_layer, c.GetInt("num_hidden_layers"));
  ASSIGN_OR_RETURN(hp.n_head, c.GetInt("num_attention_heads"));
  ASSIGN_OR_RETURN(hp.n_head_kv, c.GetIntOr("num_key_value_heads", hp.n_head));
  ASSIGN_OR_RETURN(hp.n_ff, c.GetInt("intermediate_size"));
  ASSIGN_OR_RETURN(hp.n_ctx_train, c.GetInt("max_position_embeddings"));
  ASSIGN_OR_RETURN(double eps, c.GetFloatOr("rms_norm_eps", 1e-6));  // LlamaConfig's default
  hp.norm_eps = static_cast<float>(eps);
  const int64_t default_head = hp.n_head > 0 ? hp.n_embd / hp.n_head : 0;
  ASSIGN_OR_RETURN(hp.n_embd_head, c.GetIntOr("head_dim", default_head));
  hp.rope.n_rot = static_cast<int>(std::min<int64_t>(hp.n_embd_head, 65536));
  ASSIGN_OR_RETURN(double base, c.GetFloatOr("rope_theta", 10000.0));
  hp.rope.freq_base = static_cast<float>(base);
  hp.rope.layout = RopeLayout::kHalves;  // unpermuted rows: rotate_half
  std::string scaling;
  if (c.FindMetadata("rope_scaling.rope_type") != nullptr) {
    ASSIGN_OR_RETURN(scaling, c.GetString("rope_scaling.rope_type"));
  } else {
    ASSIGN_OR_RETURN(scaling, c.GetStringOr("rope_scaling.type", "none"));
  }
  ASSIGN_OR_RETURN(double factor, c.GetFloatOr("rope_scaling.factor", 1.0));
  ASSIGN_OR_RETURN(int64_t orig, c.GetIntOr("rope_scaling.original_max_position_embeddings",
                                            hp.n_ctx_train));
  RETURN_IF_ERROR(ParseRopeScaling(scaling, factor, orig, c.path(), &hp.rope));
  if (hp.rope.scaling == RopeScaling::kYarn) {
    ASSIGN_OR_RETURN(double fast, c.GetFloatOr("rope_scaling.beta_fast", hp.rope.beta_fast));
    ASSIGN_OR_RETURN(double slow, c.GetFloatOr("rope_scaling.beta_slow", hp.rope.beta_slow));
    hp.rope.beta_fast = static_cast<float>(fast);
    hp.rope.beta_slow = static_cast<float>(slow);
  }
  ASSIGN_OR_RETURN(hp.tied_embeddings, c.GetBoolOr("tie_word_embeddings", false));
  return hp;
}

StatusOr<ModelHParams> ReadBert(const Checkpoint& c) {
  ModelHParams hp;
  hp.arch = ModelArch::kBert;
  hp.format = c.format();
  hp.use_rope = false;
  hp.tied_embeddings = false;
  if (c.format() == CheckpointFormat::kHuggingFace) {
    if (c.FindTensor("bert.embeddings.word_embeddings.weight") != nullptr) hp.bert_prefix = "bert.";
    ASSIGN_OR_RETURN(hp.n_vocab, c.GetInt("vocab_size"));
    ASSIGN_OR_RETURN(hp.n_embd, c.GetInt("hidden_size"));
    ASSIGN_OR_RETURN(hp.n_layer, c.GetInt("num_hidden_layers"));
    ASSIGN_OR_RETURN(hp.n_head, c.GetInt("num_attention_heads"));
    ASSIGN_OR_RETURN(hp.n_ff, c.GetInt("intermediate_size"));
    ASSIGN_OR_RETURN(hp.n_ctx_train, c.GetInt("max_position_embeddings"));
    ASSIGN_OR_RETURN(hp.n_token_types, c.GetIntOr("type_vocab_size", 2));
    ASSIGN_OR_RETURN(double eps, c.GetFloatOr("layer_norm_eps", 1e-12));
    hp.norm_eps = static_cast<float>(eps);
    ASSIGN_OR_RETURN(std::string pos, c.GetStringOr("position_embedding_type", "absolute"));
    if (pos != "absolute") {
      return UnimplementedError(c.path() + ": BERT position_embedding_type '" + pos +
                                "' is not supported (only 'absolute')");
    }
    ASSIGN_OR_RETURN(std::string act, c.GetStringOr("hidden_act", "gelu"));
    if (act != "gelu") {
      return UnimplementedError(c.path() + ": BERT hidden_act '" + act +
                                "' is not supported (only 'gelu')");
    }
  } else {
    ASSIGN_OR_RETURN(hp.n_embd, c.GetInt("bert.embedding_length"));
    ASSIGN_OR_RETURN(hp.n_layer, c.GetInt("bert.block_count"));
    ASSIGN_OR_RETURN(hp.n_head, c.GetInt("bert.attention.head_count"));
    ASSIGN_OR_RETURN(hp.n_ff, c.GetInt("bert.feed_forward_length"));
    ASSIGN_OR_RETURN(hp.n_ctx_train, c.GetInt("bert.context_length"));
    ASSIGN_OR_RETURN(double eps, c.GetFloat("bert.attention.layer_norm_epsilon"));
    hp.norm_eps = static_cast<float>(eps);
    const TensorInfo* embd = c.FindTensor("token_embd.weight");
    const TensorInfo* types = c.FindTensor("token_types.weight");
    if (embd == nullptr || embd->shape.ndim() != 2) {
      return NotFoundError(c.path() + ": tensor 'token_embd.weight' is missing or not 2-d");
    }
    hp.n_vocab = embd->shape[0];
    hp.n_token_types = types != nullptr && types->shape.ndim() == 2 ? types->shape[0] : 2;
  }
  hp.n_head_kv = hp.n_head;
  hp.n_embd_head = hp.n_head > 0 ? hp.n_embd / hp.n_head : 0;
  hp.rope.n_rot = 0;
  return hp;
}

Status Positive(std::string_view name, int64_t v, int64_t cap) {
  if (v <= 0 || v > cap) {
    return InvalidArgumentError(std::string(name) + " = " + std::to_string(v) +
                                " is out of range (1.." + std::to_string(cap) + ")");
  }
  return Status::Ok();
}

}  // namespace

std::string_view ModelArchName(ModelArch arch) {
  switch (arch) {
    case ModelArch::kLlama: return "llama";
    case ModelArch::kBert: return "bert";
    case ModelArch::kHuginn: return "huginn";
  }
  return "?";
}

std::string_view WeightRoleName(WeightRole role) {
  std::string_view n = GgufName(role);
  constexpr std::string_view kSuffix = ".weight";
  if (n.size() > kSuffix.size() && n.substr(n.size() - kSuffix.size()) == kSuffix) {
    n.remove_suffix(kSuffix.size());
  }
  return n;
}

bool IsPerLayer(WeightRole role) { return role >= R::kAttnNorm; }

Status ModelHParams::Validate() const {
  RETURN_IF_ERROR(Positive("n_vocab", n_vocab, int64_t{1} << 24));
  RETURN_IF_ERROR(Positive("n_embd", n_embd, int64_t{1} << 17));
  RETURN_IF_ERROR(Positive("n_layer", n_layer, 1024));
  RETURN_IF_ERROR(Positive("n_head", n_head, 4096));
  RETURN_IF_ERROR(Positive("n_head_kv", n_head_kv, 4096));
  RETURN_IF_ERROR(Positive("n_embd_head", n_embd_head, 4096));
  RETURN_IF_ERROR(Positive("n_ff", n_ff, int64_t{1} << 20));
  RETURN_IF_ERROR(Positive("n_ctx_train", n_ctx_train, int64_t{1} << 24));
  if (n_head % n_head_kv != 0) {
    return InvalidArgumentError("n_head " + std::to_string(n_head) +
                                " is not a multiple of n_head_kv " + std::to_string(n_head_kv));
  }
  if (arch == ModelArch::kBert && n_embd % n_head != 0) {
    return InvalidArgumentError("n_embd " + std::to_string(n_embd) +
                                " is not a multiple of n_head " + std::to_string(n_head));
  }
  if (!(norm_eps > 0.0f) || norm_eps > 1.0f) {
    return InvalidArgumentError("norm eps " + std::to_string(norm_eps) + " is out of (0, 1]");
  }
  if (arch == ModelArch::kBert) {
    RETURN_IF_ERROR(Positive("n_token_types", n_token_types, 1024));
  }
  if (arch == ModelArch::kHuginn) RETURN_IF_ERROR(internal::ValidateHuginn(*this));
  if (use_rope) {
    if (rope.n_rot <= 0 || rope.n_rot % 2 != 0 || rope.n_rot > n_embd_head) {
      return InvalidArgumentError("rope n_rot " + std::to_string(rope.n_rot) +
                                  " must be even and in 1..n_embd_head (" +
                                  std::to_string(n_embd_head) + ")");
    }
    RETURN_IF_ERROR(rope.Validate());
  }
  return Status::Ok();
}

std::string ModelHParams::ToString() const {
  std::ostringstream os;
  os << "arch            " << ModelArchName(arch) << "\n"
     << "n_vocab         " << n_vocab << "\n"
     << "n_embd          " << n_embd << "\n"
     << "n_layer         " << n_layer << "\n"
     << "n_head          " << n_head << "\n"
     << "n_head_kv       " << n_head_kv << "\n"
     << "n_embd_head     " << n_embd_head << "\n"
     << "n_ff            " << n_ff << "\n"
     << "n_ctx_train     " << n_ctx_train << "\n"
     << "norm_eps        " << norm_eps << "\n"
     << "tied_embeddings " << (tied_embeddings ? "yes" : "no") << "\n";
  if (arch == ModelArch::kBert) os << "n_token_types   " << n_token_types << "\n";
  if (arch == ModelArch::kHuginn) {
    os << "layers          prelude " << n_layer_prelude << ", core " << n_layer_core << " x r "
       << n_recurrence << " (default), coda " << n_layer_coda << "\n"
       << "embd_scale      " << embd_scale << "\n"
       << "qk_bias         " << (qk_bias ? "yes" : "no") << "\n";
  }
  if (use_rope) {
    static constexpr const char* kScaling[] = {"none", "linear", "ntk", "yarn"};
    os << "rope            base " << rope.freq_base << ", n_rot " << rope.n_rot << ", layout "
       << (rope.layout == RopeLayout::kHalves ? "halves (rotate_half)"
                                              : "interleaved (adjacent pairs)")
       << ", scaling " << kScaling[static_cast<int>(rope.scaling)];
    if (rope.scaling != RopeScaling::kNone) {
      os << " x" << rope.factor << " from " << rope.original_ctx;
    }
    os << "\n";
  }
  return os.str();
}

StatusOr<ModelHParams> ReadHParams(const Checkpoint& ckpt) {
  const std::string arch = ckpt.architecture();
  StatusOr<ModelHParams> hp = [&]() -> StatusOr<ModelHParams> {
    if (ckpt.format() == CheckpointFormat::kGguf) {
      if (arch == "llama") return ReadGgufLlama(ckpt, arch);
      if (arch == "bert") return ReadBert(ckpt);
    } else {
      if (arch == "llama") return ReadHfLlama(ckpt);
      if (arch == "bert") return ReadBert(ckpt);
      if (arch == "huginn_raven") return internal::ReadHfHuginn(ckpt);
    }
    return UnimplementedError(ckpt.path() + ": architecture '" + arch +
                              "' is not supported (muninn runs llama, huginn_raven and bert)");
  }();
  if (!hp.ok()) return hp;
  Status valid = hp->Validate();
  if (!valid.ok()) return valid.WithContext(ckpt.path() + ": invalid hyperparameters");
  return hp;
}

std::string TensorName(const ModelHParams& hp, WeightRole role, int64_t layer) {
  std::string_view base;
  if (hp.format == CheckpointFormat::kGguf) {
    base = GgufName(role);
  } else if (hp.arch == ModelArch::kHuginn) {
    return internal::HuginnTensorName(hp, role, layer);
  } else if (hp.arch == ModelArch::kLlama) {
    base = HfLlamaName(role);
  } else {
    base = HfBertName(role);
  }
  if (base.empty()) return "";
  const bool per_layer = IsPerLayer(role);
  MUNINN_CHECK(!per_layer || layer >= 0) << "role " << WeightRoleName(role) << " needs a layer";
  const std::string n = std::to_string(layer);
  if (hp.format == CheckpointFormat::kGguf) {
    return per_layer ? "blk." + n + "." + std::string(base) : std::string(base);
  }
  if (hp.arch == ModelArch::kLlama) {
    return per_layer ? "model.layers." + n + "." + std::string(base) : std::string(base);
  }
  return hp.bert_prefix + (per_layer ? "encoder.layer." + n + "." : "") + std::string(base);
}

Shape ExpectedShape(const ModelHParams& hp, WeightRole role) {
  switch (role) {
    case R::kAdapter: return Shape{hp.n_embd, 2 * hp.n_embd};
    case R::kAttnQkv: return Shape{hp.n_embd_q() + 2 * hp.n_embd_kv(), hp.n_embd};
    case R::kAttnQkBias: return Shape{2, 1, hp.n_head, hp.n_embd_head};
    case R::kFfnGateUp: return Shape{2 * hp.n_ff, hp.n_embd};
    case R::kTokenEmbd:
    case R::kOutput: return Shape{hp.n_vocab, hp.n_embd};
    case R::kPosEmbd: return Shape{hp.n_ctx_train, hp.n_embd};
    case R::kTokenTypes: return Shape{hp.n_token_types, hp.n_embd};
    case R::kAttnQ: return Shape{hp.n_embd_q(), hp.n_embd};
    case R::kAttnQBias: return Shape{hp.n_embd_q()};
    case R::kAttnK:
    case R::kAttnV: return Shape{hp.n_embd_kv(), hp.n_embd};
    case R::kAttnKBias:
    case R::kAttnVBias: return Shape{hp.n_embd_kv()};
    case R::kAttnOut: return Shape{hp.n_embd, hp.n_embd_q()};
    case R::kFfnGate:
    case R::kFfnUp: return Shape{hp.n_ff, hp.n_embd};
    case R::kFfnUpBias: return Shape{hp.n_ff};
    case R::kFfnDown: return Shape{hp.n_embd, hp.n_ff};
    default: return Shape{hp.n_embd};  // norms and the remaining biases
  }
}

std::span<const WeightRole> RolesOf(const ModelHParams& hp) {
  if (hp.arch == ModelArch::kBert) return kBert;
  if (hp.arch == ModelArch::kHuginn) return internal::HuginnRoles(hp);
  if (hp.tied_embeddings) return kLlamaTied;
  return kLlamaUntied;
}

StatusOr<Tensor> GetWeight(const Checkpoint& ckpt, const ModelHParams& hp, WeightRole role,
                           int64_t layer) {
  const std::string name = TensorName(hp, role, layer);
  if (name.empty()) {
    return InvalidArgumentError("architecture " + std::string(ModelArchName(hp.arch)) +
                                " has no weight '" + std::string(WeightRoleName(role)) + "'");
  }
  if (IsPerLayer(role) && layer >= hp.n_layer) {
    return OutOfRangeError("layer " + std::to_string(layer) + " of a " +
                           std::to_string(hp.n_layer) + "-layer model");
  }
  return ckpt.GetTensor(name, ExpectedShape(hp, role));
}

Status ValidateWeights(const Checkpoint& ckpt, const ModelHParams& hp) {
  for (WeightRole role : RolesOf(hp)) {
    if (!IsPerLayer(role)) {
      RETURN_IF_ERROR(ckpt.CheckTensor(TensorName(hp, role), ExpectedShape(hp, role)));
      continue;
    }
  }
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    for (WeightRole role : RolesOf(hp)) {
      if (IsPerLayer(role)) {
        RETURN_IF_ERROR(ckpt.CheckTensor(TensorName(hp, role, l), ExpectedShape(hp, role)));
      }
    }
  }
  return Status::Ok();
}

}  // namespace muninn::model
