#include "llm_cli.h"

#include <vector>

#include "app_config.h"
#include "device_backend.h"
#include "muninn/core/cpu_backend.h"

namespace muninn::tools {

StatusOr<std::string> ResolveLlmPath(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (auto found = FindAboveExeOrCwd(kDefaultLlmPath)) return *found;
  return NotFoundError(std::string("the default model ") + kDefaultLlmPath +
                       " was not found above the executable or the working directory; run "
                       "scripts/setup.sh to fetch it, or pass -m MODEL");
}

StatusOr<std::unique_ptr<CliModel>> OpenCliModel(const std::string& path_flag, int threads,
                                                 bool load_tokenizer, bool exact_matmul,
                                                 const std::string& device,
                                                 const LoraSpec& lora, int gpu_layers) {
  if (threads < 0) return InvalidArgumentError("threads must be >= 0 (0 = all cores)");
  auto m = std::make_unique<CliModel>();
  m->pool = std::make_unique<ThreadPool>(threads);
  CpuBackendOptions bo;
  bo.pool = m->pool.get();
  bo.exact_matmul = exact_matmul;
  if (exact_matmul && device != "cpu") {
    return InvalidArgumentError("--exact selects CPU kernels; it cannot be combined with --device " +
                                device);
  }
  // The device first (as the long-context runtime does): without one, --device fails at once.
  ASSIGN_OR_RETURN(m->backend, CreateBackendForDevice(device, bo));
  ASSIGN_OR_RETURN(m->path, ResolveLlmPath(path_flag));
  model::LoadModelOptions lo;
  lo.load_tokenizer = load_tokenizer;
  if (exact_matmul) lo.huginn_matrix_dtype = DType::kF32;  // Huginn's F32 shards as stored
  lo.on_host = LoraOnHost(lora);
  lo.gpu_layers = gpu_layers;
  if (gpu_layers >= 0 && !m->backend->device().is_cpu()) {
    ASSIGN_OR_RETURN(m->host_backend, CreateCpuBackend(bo));
    lo.host = m->host_backend.get();
  }
  ASSIGN_OR_RETURN(m->loaded, model::LoadModel(m->path, m->backend.get(), lo));
  return m;
}

}  // namespace muninn::tools
