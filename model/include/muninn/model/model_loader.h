// Loading a llama-family or Huginn checkpoint (GGUF file or Hugging Face folder) into a ready
// Model, with its tokenizer and chat template.
//
// Weights stay views of the mapped file in their stored dtype (no dequantized copy); only norm
// weights stored as f16/bf16 are converted to small f32 copies, because RmsNorm takes f32.
// Huginn (HF model_type "huginn_raven", stored in F32) may have its matrices converted to bf16 or
// f16 at load (LoadModelOptions::huginn_matrix_dtype, bf16 by default: half the resident bytes,
// the precision the authors evaluate in); its layout is prelude / core × mean_recurrence / coda.
// Errors name the file and what is wrong: Unimplemented for architectures other than these,
// NotFound / InvalidArgument for missing or misshapen tensors (checked before any byte is read).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "muninn/core/backend.h"
#include "muninn/core/status.h"
#include "muninn/model/checkpoint.h"
#include "muninn/model/model.h"
#include "muninn/model/model_hparams.h"
#include "muninn/model/tokenizer.h"

namespace muninn::model {

struct LoadModelOptions {
  bool load_tokenizer = true;
  // Huginn only: the dtype f32 matrices are converted to at load (kF32 keeps mmap views).
  DType huginn_matrix_dtype = DType::kBF16;
  // When set, called with the model as loaded, on the host, and its result is the model
  // LoadModel returns, built on `backend` (work that needs host weights, such as merging a LoRA
  // adapter, before a device backend copies them). On a device backend the host model is on a
  // CPU backend of LoadModel's own, which lives for the call only: the result must not keep it
  // (a model made with Model::Create on the host model's backend does not outlive the call; it is
  // rebuilt on `backend`, its weights copied to the device).
  std::function<StatusOr<std::unique_ptr<Model>>(const Model& host)> on_host;
  // Partial offload (`--gpu-layers`): on a device backend, only the top `gpu_layers` layers and
  // the head go to the device; the embeddings and the layers below run on `host` (a CPU backend,
  // not owned, which must outlive the model; Model's LayerSplit). -1, or n_layer and more: every
  // layer on the device. InvalidArgument for 0 (nothing on the device: use the CPU backend), for
  // values below -1, and for any value other than -1 on a CPU backend.
  int32_t gpu_layers = -1;
  Backend* host = nullptr;
};

struct LoadedModel {
  std::unique_ptr<Checkpoint> checkpoint;  // keeps the mapping alive (the tensors do too)
  ModelHParams hparams;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null unless load_tokenizer
  std::string chat_template;             // the checkpoint's Jinja template, or ""
};

// The ModelConfig of a llama (or Huginn) checkpoint's hyperparameters.
StatusOr<ModelConfig> LlamaConfigFromHParams(const ModelHParams& hp);

// Reads every llama weight of `ckpt` (views; norms converted to f32 when stored otherwise).
StatusOr<ModelWeights> LoadLlamaWeights(const Checkpoint& ckpt, const ModelHParams& hp);

// Huginn: prelude [0, a), core [a, b) × mean_recurrence, coda [b, n_layer).
ModelLayout HuginnLayout(const ModelHParams& hp);
// Reads every Huginn weight (fused Wqkv and gate;up kept whole, wq/wk/wv and w_gate/w_up are
// row views of them; lm_head tied to wte unless tie_embeddings is false; freqs_cis ignored).
// f32 matrices are converted to `matrix_dtype` (kF32: left as views).
StatusOr<ModelWeights> LoadHuginnWeights(const Checkpoint& ckpt, const ModelHParams& hp,
                                         DType matrix_dtype = DType::kF32);

// Opens `path` and builds the Model on `backend` (not owned; must outlive the model).
StatusOr<LoadedModel> LoadModel(const std::string& path, Backend* backend,
                                const LoadModelOptions& options = {});

}  // namespace muninn::model
