// Private to tools/: what `muninn generate`, `logits` and `bench` share — finding the default
// model, and owning thread pool → backend → loaded model for the length of one command.
#pragma once

#include <memory>
#include <string>

#include "muninn/core/backend.h"
#include "muninn/core/status.h"
#include "muninn/core/thread_pool.h"
#include "lora_spec.h"
#include "muninn/model/model_loader.h"

namespace muninn::tools {

inline constexpr const char* kDefaultLlmPath = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

// `flag` when given; otherwise kDefaultLlmPath under the nearest ancestor of the executable or of
// the working directory that holds it. NotFound telling the user to run scripts/setup.sh when the
// default model is nowhere.
StatusOr<std::string> ResolveLlmPath(const std::string& flag);

// Members in dependency order: they die in reverse.
struct CliModel {
  std::string path;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Backend> host_backend;  // the host layers' with --gpu-layers (partial offload)
  model::LoadedModel loaded;
};

// Loads `path_flag` (see ResolveLlmPath) with `threads` threads (0 = all cores). `exact_matmul`
// builds the backend with CpuBackendOptions::exact_matmul (f32 activations for quantized weights).
// `device` names the backend (device_backend.h: cpu, cuda, cuda:N); the weights go to it.
// `lora` (a PEFT folder, lora_spec.h) is merged into the weights on the host first.
// `gpu_layers` >= 0 with a device: only that many top layers go to it (LoadModelOptions).
StatusOr<std::unique_ptr<CliModel>> OpenCliModel(const std::string& path_flag, int threads,
                                                 bool load_tokenizer, bool exact_matmul = false,
                                                 const std::string& device = "cpu",
                                                 const LoraSpec& lora = {},
                                                 int gpu_layers = -1);

}  // namespace muninn::tools
