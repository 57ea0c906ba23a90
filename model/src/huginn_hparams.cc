#include "huginn_hparams.h"

#include <algorithm>
#include <cmath>

namespace muninn::model::internal {
namespace {

using R = WeightRole;

// Globals first, then the per-layer roles (RolesOf's order).
constexpr WeightRole kTiedBias[] = {R::kTokenEmbd,  R::kAdapter,      R::kOutputNorm,
                                    R::kAttnNorm,   R::kAttnQkv,      R::kAttnQkBias,
                                    R::kAttnOut,    R::kAttnPostNorm, R::kFfnNorm,
                                    R::kFfnGateUp,  R::kFfnDown,      R::kFfnPostNorm};
constexpr WeightRole kTied[] = {R::kTokenEmbd,    R::kAdapter,  R::kOutputNorm, R::kAttnNorm,
                                R::kAttnQkv,      R::kAttnOut,  R::kAttnPostNorm, R::kFfnNorm,
                                R::kFfnGateUp,    R::kFfnDown,  R::kFfnPostNorm};
constexpr WeightRole kUntiedBias[] = {R::kTokenEmbd, R::kAdapter,      R::kOutputNorm,
                                      R::kOutput,    R::kAttnNorm,     R::kAttnQkv,
                                      R::kAttnQkBias, R::kAttnOut,     R::kAttnPostNorm,
                                      R::kFfnNorm,   R::kFfnGateUp,    R::kFfnDown,
                                      R::kFfnPostNorm};
constexpr WeightRole kUntied[] = {R::kTokenEmbd,  R::kAdapter,  R::kOutputNorm, R::kOutput,
                                  R::kAttnNorm,   R::kAttnQkv,  R::kAttnOut,    R::kAttnPostNorm,
                                  R::kFfnNorm,    R::kFfnGateUp, R::kFfnDown,   R::kFfnPostNorm};

std::string_view LayerName(WeightRole role) {
  switch (role) {
    case R::kAttnNorm: return "norm_1.weight";
    case R::kAttnQkv: return "attn.Wqkv.weight";
    case R::kAttnQkBias: return "attn.qk_bias";
    case R::kAttnOut: return "attn.proj.weight";
    case R::kAttnPostNorm: return "norm_2.weight";
    case R::kFfnNorm: return "norm_3.weight";
    case R::kFfnGateUp: return "mlp.fc.weight";
    case R::kFfnDown: return "mlp.proj.weight";
    case R::kFfnPostNorm: return "norm_4.weight";
    default: return "";
  }
}

// A string key that must have `want` when present.
Status RequireString(const Checkpoint& c, std::string_view key, std::string_view want,
                     std::string_view alt = {}) {
  if (c.FindMetadata(key) == nullptr) return Status::Ok();
  ASSIGN_OR_RETURN(std::string v, c.GetString(key));
  if (v == want || (!alt.empty() && v == alt)) return Status::Ok();
  return UnimplementedError(c.path() + ": config key '" + std::string(key) + "' is '" + v +
                            "'; muninn runs Huginn checkpoints with '" + std::string(want) + "'");
}

}  // namespace

StatusOr<ModelHParams> ReadHfHuginn(const Checkpoint& c) {
  ModelHParams hp;
  hp.arch = ModelArch::kHuginn;
  hp.format = CheckpointFormat::kHuggingFace;
  ASSIGN_OR_RETURN(hp.n_embd, c.GetInt("n_embd"));
  ASSIGN_OR_RETURN(hp.n_head, c.GetInt("n_heads"));
  ASSIGN_OR_RETURN(hp.n_head_kv, c.GetIntOr("num_key_value_heads", hp.n_head));
  ASSIGN_OR_RETURN(hp.n_layer, c.GetInt("n_layers"));
  ASSIGN_OR_RETURN(hp.n_layer_prelude, c.GetInt("n_layers_in_prelude"));
  ASSIGN_OR_RETURN(hp.n_layer_core, c.GetInt("n_layers_in_recurrent_block"));
  ASSIGN_OR_RETURN(hp.n_layer_coda, c.GetInt("n_layers_in_coda"));
  ASSIGN_OR_RETURN(hp.n_recurrence, c.GetInt("mean_recurrence"));
  ASSIGN_OR_RETURN(hp.n_ctx_train, c.GetInt("block_size"));
  ASSIGN_OR_RETURN(int64_t vocab, c.GetInt("vocab_size"));
  ASSIGN_OR_RETURN(hp.n_vocab, c.GetIntOr("padded_vocab_size", vocab));
  ASSIGN_OR_RETURN(hp.n_ff, c.GetInt("intermediate_size"));
  ASSIGN_OR_RETURN(double eps, c.GetFloatOr("norm_eps", 1e-6));
  hp.norm_eps = static_cast<float>(eps);
  const int64_t default_head = hp.n_head > 0 ? hp.n_embd / hp.n_head : 0;
  ASSIGN_OR_RETURN(hp.n_embd_head, c.GetIntOr("head_dim", default_head));
  hp.rope.n_rot = static_cast<int>(std::min<int64_t>(std::max<int64_t>(hp.n_embd_head, 0), 65536));
  double base = 50000.0;
  if (c.FindMetadata("rope_base") != nullptr) {
    ASSIGN_OR_RETURN(base, c.GetFloat("rope_base"));
  } else {
    ASSIGN_OR_RETURN(base, c.GetFloatOr("rope_theta", base));
  }
  if (!(base > 1.0) || !std::isfinite(base)) {
    return InvalidArgumentError(c.path() + ": rope_base " + std::to_string(base) +
                                " must be > 1");
  }
  hp.rope.freq_base = static_cast<float>(base);
  hp.rope.layout = RopeLayout::kInterleaved;  // freqs_cis on adjacent pairs (§3)
  if (c.FindMetadata("rope_scaling.factor") != nullptr ||
      c.FindMetadata("rope_scaling.rope_type") != nullptr) {
    return UnimplementedError(c.path() + ": config key 'rope_scaling' is set; muninn runs Huginn "
                              "checkpoints without RoPE scaling");
  }
  ASSIGN_OR_RETURN(hp.qk_bias, c.GetBoolOr("qk_bias", false));
  ASSIGN_OR_RETURN(hp.tied_embeddings, c.GetBoolOr("tie_embeddings", true));
  ASSIGN_OR_RETURN(bool bias, c.GetBoolOr("bias", false));
  if (bias) {
    return UnimplementedError(c.path() + ": config key 'bias' is true; muninn runs Huginn "
                              "checkpoints without linear biases (only qk_bias)");
  }
  RETURN_IF_ERROR(RequireString(c, "injection_type", "linear"));
  RETURN_IF_ERROR(RequireString(c, "block_class_name", "SandwichBlock"));
  RETURN_IF_ERROR(RequireString(c, "norm_class_name", "RMSNorm_llama", "RMSNorm"));
  RETURN_IF_ERROR(RequireString(c, "mlp_class_name", "GatedMLP"));
  RETURN_IF_ERROR(RequireString(c, "nonlin_name", "SiLU"));
  ASSIGN_OR_RETURN(double noise, c.GetFloatOr("test_time_noise", 0.0));
  if (noise != 0.0) {
    return UnimplementedError(c.path() + ": config key 'test_time_noise' is " +
                              std::to_string(noise) + "; muninn runs Huginn without it (0)");
  }
  const double default_scale = hp.n_embd > 0 ? std::sqrt(static_cast<double>(hp.n_embd)) : 1.0;
  ASSIGN_OR_RETURN(double scale, c.GetFloatOr("init_values.embed_scale", default_scale));
  hp.embd_scale = static_cast<float>(scale);
  hp.use_rope = true;
  return hp;
}

Status ValidateHuginn(const ModelHParams& hp) {
  if (hp.n_layer_prelude < 0 || hp.n_layer_core <= 0 || hp.n_layer_coda < 0 ||
      hp.n_layer_prelude + hp.n_layer_core + hp.n_layer_coda != hp.n_layer) {
    return InvalidArgumentError(
        "n_layers_in_prelude (" + std::to_string(hp.n_layer_prelude) +
        ") + n_layers_in_recurrent_block (" + std::to_string(hp.n_layer_core) +
        ") + n_layers_in_coda (" + std::to_string(hp.n_layer_coda) + ") must equal n_layers (" +
        std::to_string(hp.n_layer) + "), with a non-empty recurrent block");
  }
  if (hp.n_recurrence <= 0 || hp.n_recurrence > 4096) {
    return InvalidArgumentError("mean_recurrence " + std::to_string(hp.n_recurrence) +
                                " is out of range (1..4096)");
  }
  if (hp.qk_bias && hp.n_head_kv != hp.n_head) {
    return UnimplementedError("qk_bias with grouped-query attention (n_heads " +
                              std::to_string(hp.n_head) + ", num_key_value_heads " +
                              std::to_string(hp.n_head_kv) + ") is not supported");
  }
  if (!(hp.embd_scale > 0.0f) || !std::isfinite(hp.embd_scale)) {
    return InvalidArgumentError("embedding scale " + std::to_string(hp.embd_scale) +
                                " must be finite and > 0");
  }
  return Status::Ok();
}

std::string HuginnTensorName(const ModelHParams& hp, WeightRole role, int64_t layer) {
  switch (role) {
    case R::kTokenEmbd: return "transformer.wte.weight";
    case R::kAdapter: return "transformer.adapter.weight";
    case R::kOutputNorm: return "transformer.ln_f.weight";
    case R::kOutput: return "lm_head.weight";
    default: break;
  }
  const std::string_view base = LayerName(role);
  if (base.empty()) return "";
  MUNINN_CHECK(layer >= 0) << "role " << WeightRoleName(role) << " needs a layer";
  std::string prefix;
  if (layer < hp.n_layer_prelude) {
    prefix = "transformer.prelude." + std::to_string(layer);
  } else if (layer < hp.n_layer_prelude + hp.n_layer_core) {
    prefix = "transformer.core_block." + std::to_string(layer - hp.n_layer_prelude);
  } else {
    prefix = "transformer.coda." + std::to_string(layer - hp.n_layer_prelude - hp.n_layer_core);
  }
  return prefix + "." + std::string(base);
}

std::span<const WeightRole> HuginnRoles(const ModelHParams& hp) {
  if (hp.tied_embeddings) return hp.qk_bias ? std::span<const WeightRole>(kTiedBias) : kTied;
  return hp.qk_bias ? std::span<const WeightRole>(kUntiedBias) : kUntied;
}

}  // namespace muninn::model::internal
