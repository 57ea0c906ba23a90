#include "muninn/model/model_loader.h"

#include <filesystem>
#include <limits>
#include <string>
#include <utility>

#include "muninn/core/cpu_backend.h"
#include "muninn/core/fp16.h"
#include "muninn/model/tokenizer_factory.h"

namespace muninn::model {

namespace {

StatusOr<int32_t> ToInt32(int64_t v, const char* what) {
  if (v <= 0 || v > std::numeric_limits<int32_t>::max()) {
    return InvalidArgumentError(std::string(what) + " = " + std::to_string(v) +
                                " is out of range for this model");
  }
  return static_cast<int32_t>(v);
}

// RmsNorm takes f32 weights; HF checkpoints often store them in bf16/f16.
StatusOr<Tensor> AsF32(const Tensor& t) {
  if (t.dtype() == DType::kF32 && t.is_contiguous()) return t;
  ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(DType::kF32, t.shape()));
  const int64_t n = t.numel();
  float* dst = out.data_as<float>();
  ASSIGN_OR_RETURN(Tensor src, t.Contiguous());
  switch (src.dtype()) {
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = Fp16ToFp32(src.data_as<uint16_t>()[i]);
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFp32(src.data_as<uint16_t>()[i]);
      break;
    case DType::kF32:
      for (int64_t i = 0; i < n; ++i) dst[i] = src.data_as<float>()[i];
      break;
    default:
      return UnimplementedError("a norm weight of dtype " + std::string(DTypeName(t.dtype())) +
                                " is not supported (expected f32, f16 or bf16)");
  }
  return out;
}

}  // namespace

StatusOr<ModelConfig> LlamaConfigFromHParams(const ModelHParams& hp) {
  if (hp.arch != ModelArch::kLlama && hp.arch != ModelArch::kHuginn) {
    return UnimplementedError("muninn generates with llama-family and Huginn decoders; this "
                              "checkpoint is '" + std::string(ModelArchName(hp.arch)) + "'");
  }
  ModelConfig c;
  c.architecture = std::string(ModelArchName(hp.arch));
  if (hp.arch == ModelArch::kHuginn) {
    c.embd_scale = hp.embd_scale;
    c.latent_norm = true;
  }
  ASSIGN_OR_RETURN(c.n_vocab, ToInt32(hp.n_vocab, "n_vocab"));
  ASSIGN_OR_RETURN(c.n_embd, ToInt32(hp.n_embd, "n_embd"));
  ASSIGN_OR_RETURN(c.n_layer, ToInt32(hp.n_layer, "n_layer"));
  ASSIGN_OR_RETURN(c.n_head, ToInt32(hp.n_head, "n_head"));
  ASSIGN_OR_RETURN(c.n_head_kv, ToInt32(hp.n_head_kv, "n_head_kv"));
  ASSIGN_OR_RETURN(c.head_dim, ToInt32(hp.n_embd_head, "head_dim"));
  ASSIGN_OR_RETURN(c.n_ff, ToInt32(hp.n_ff, "n_ff"));
  c.n_ctx_train = hp.n_ctx_train > 0 && hp.n_ctx_train <= std::numeric_limits<int32_t>::max()
                      ? static_cast<int32_t>(hp.n_ctx_train)
                      : 0;
  c.norm_eps = hp.norm_eps;
  c.rope = hp.rope;
  RETURN_IF_ERROR(c.Validate());
  return c;
}

StatusOr<ModelWeights> LoadLlamaWeights(const Checkpoint& ckpt, const ModelHParams& hp) {
  RETURN_IF_ERROR(ValidateWeights(ckpt, hp));
  ModelWeights w;
  using R = WeightRole;
  ASSIGN_OR_RETURN(w.tok_embd, GetWeight(ckpt, hp, R::kTokenEmbd));
  ASSIGN_OR_RETURN(Tensor out_norm, GetWeight(ckpt, hp, R::kOutputNorm));
  ASSIGN_OR_RETURN(w.output_norm, AsF32(out_norm));
  if (hp.tied_embeddings) {
    w.output = w.tok_embd;
  } else {
    ASSIGN_OR_RETURN(w.output, GetWeight(ckpt, hp, R::kOutput));
  }
  w.layers.resize(static_cast<size_t>(hp.n_layer));
  for (int64_t i = 0; i < hp.n_layer; ++i) {
    LayerWeights& l = w.layers[static_cast<size_t>(i)];
    l.type = BlockType::kLlama;
    ASSIGN_OR_RETURN(Tensor attn_norm, GetWeight(ckpt, hp, R::kAttnNorm, i));
    ASSIGN_OR_RETURN(l.attn_norm, AsF32(attn_norm));
    ASSIGN_OR_RETURN(Tensor ffn_norm, GetWeight(ckpt, hp, R::kFfnNorm, i));
    ASSIGN_OR_RETURN(l.ffn_norm, AsF32(ffn_norm));
    ASSIGN_OR_RETURN(l.wq, GetWeight(ckpt, hp, R::kAttnQ, i));
    ASSIGN_OR_RETURN(l.wk, GetWeight(ckpt, hp, R::kAttnK, i));
    ASSIGN_OR_RETURN(l.wv, GetWeight(ckpt, hp, R::kAttnV, i));
    ASSIGN_OR_RETURN(l.wo, GetWeight(ckpt, hp, R::kAttnOut, i));
    ASSIGN_OR_RETURN(l.w_gate, GetWeight(ckpt, hp, R::kFfnGate, i));
    ASSIGN_OR_RETURN(l.w_up, GetWeight(ckpt, hp, R::kFfnUp, i));
    ASSIGN_OR_RETURN(l.w_down, GetWeight(ckpt, hp, R::kFfnDown, i));
  }
  return w;
}

StatusOr<LoadedModel> LoadModel(const std::string& path, Backend* backend,
                                const LoadModelOptions& options) {
  MUNINN_CHECK(backend != nullptr);
  LoadedModel out;
  ASSIGN_OR_RETURN(out.checkpoint, Checkpoint::Open(path));
  ASSIGN_OR_RETURN(out.hparams, ReadHParams(*out.checkpoint));
  ASSIGN_OR_RETURN(ModelConfig config, LlamaConfigFromHParams(out.hparams));
  const bool huginn = out.hparams.arch == ModelArch::kHuginn;
  auto weights = huginn ? LoadHuginnWeights(*out.checkpoint, out.hparams,
                                            options.huginn_matrix_dtype)
                        : LoadLlamaWeights(*out.checkpoint, out.hparams);
  if (!weights.ok()) return weights.status().WithContext(path);
  LayerSplit split;
  if (options.gpu_layers < -1) {
    return InvalidArgumentError(
        "--gpu-layers must be -1 (every layer) or a layer count >= 1, got " +
        std::to_string(options.gpu_layers));
  }
  if (options.gpu_layers >= 0 && backend->device().is_cpu()) {
    return InvalidArgumentError(
        "--gpu-layers splits a model between the CPU and a GPU; it needs "
        "--device cuda");
  }
  if (options.gpu_layers >= 0 && options.gpu_layers < config.n_layer) {
    if (options.gpu_layers == 0) {
      return InvalidArgumentError("--gpu-layers 0 leaves nothing on " +
                                  backend->device().ToString() + "; use --device cpu");
    }
    if (options.host == nullptr) {
      return InvalidArgumentError("a partial offload (gpu_layers " +
                                  std::to_string(options.gpu_layers) +
                                  ") needs a CPU backend for the host layers");
    }
    split = {options.host, config.n_layer - options.gpu_layers};
  }
  // With an on_host step and a device backend, the model is first built on a host backend.
  std::unique_ptr<Backend> host_backend;
  Backend* first = backend;
  if (options.on_host && !backend->device().is_cpu()) {
    ASSIGN_OR_RETURN(host_backend, CreateCpuBackend(CpuBackendOptions{}));
    first = host_backend.get();
  }
  auto model =
      Model::Create(first, config, std::move(weights).value(),
                    huginn ? HuginnLayout(out.hparams) : ModelLayout::Plain(config.n_layer),
                    first == backend ? split : LayerSplit{});
  if (!model.ok()) return model.status().WithContext(path);
  out.model = std::move(model).value();
  if (options.on_host) {
    ASSIGN_OR_RETURN(std::unique_ptr<Model> changed, options.on_host(*out.model));
    if (changed == nullptr) return InternalError("LoadModel: the on_host step returned no model");
    if (first != backend) {
      // Rebuilt on the device: Create copies the (host) weights there.
      auto placed =
          Model::Create(backend, changed->config(), changed->weights(), changed->layout(), split);
      if (!placed.ok()) return placed.status().WithContext(path);
      changed = std::move(placed).value();
    }
    out.model = std::move(changed);
  }
  if (options.load_tokenizer) {
    auto tok = LoadTokenizer(path);
    if (!tok.ok()) return tok.status().WithContext("loading the tokenizer of " + path);
    out.tokenizer = std::move(tok).value();
    if (out.checkpoint->format() == CheckpointFormat::kGguf) {
      ASSIGN_OR_RETURN(out.chat_template,
                       out.checkpoint->GetStringOr("tokenizer.chat_template", ""));
    } else {
      std::filesystem::path dir(path);
      std::error_code ec;
      if (!std::filesystem::is_directory(dir, ec)) dir = dir.parent_path();
      out.chat_template = HfChatTemplate(dir.string());
    }
  }
  return out;
}

}  // namespace muninn::model
