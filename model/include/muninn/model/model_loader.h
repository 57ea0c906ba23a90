// Loading a llama-family checkpoint (GGUF file or Hugging Face folder) into a ready Model, with
// its tokenizer and chat template.
//
// Weights stay views of the mapped file in their stored dtype (no dequantized copy); only norm
// weights stored as f16/bf16 are converted to small f32 copies, because RmsNorm takes f32.
// Errors name the file and what is wrong: Unimplemented for architectures other than llama,
// NotFound / InvalidArgument for missing or misshapen tensors (checked before any byte is read).
#pragma once

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
};

struct LoadedModel {
  std::unique_ptr<Checkpoint> checkpoint;  // keeps the mapping alive (the tensors do too)
  ModelHParams hparams;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null unless load_tokenizer
  std::string chat_template;             // the checkpoint's Jinja template, or ""
};

// The ModelConfig of a llama checkpoint's hyperparameters.
StatusOr<ModelConfig> LlamaConfigFromHParams(const ModelHParams& hp);

// Reads every llama weight of `ckpt` (views; norms converted to f32 when stored otherwise).
StatusOr<ModelWeights> LoadLlamaWeights(const Checkpoint& ckpt, const ModelHParams& hp);

// Opens `path` and builds the Model on `backend` (not owned; must outlive the model).
StatusOr<LoadedModel> LoadModel(const std::string& path, Backend* backend,
                                const LoadModelOptions& options = {});

}  // namespace muninn::model
