#include "llm_cli.h"

#include <filesystem>
#include <vector>

#include "muninn/core/cpu_backend.h"

namespace muninn::tools {

namespace fs = std::filesystem;

StatusOr<std::string> ResolveLlmPath(const std::string& flag) {
  if (!flag.empty()) return flag;
  std::error_code ec;
  std::vector<fs::path> starts;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) starts.push_back(exe.parent_path());
  starts.push_back(fs::current_path(ec));
  for (fs::path p : starts) {
    for (int depth = 0; depth < 8 && !p.empty(); ++depth) {
      if (fs::exists(p / kDefaultLlmPath, ec)) return (p / kDefaultLlmPath).string();
      if (p == p.parent_path()) break;
      p = p.parent_path();
    }
  }
  return NotFoundError(std::string("the default model ") + kDefaultLlmPath +
                       " was not found above the executable or the working directory; run "
                       "scripts/setup.sh to fetch it, or pass -m MODEL");
}

StatusOr<std::unique_ptr<CliModel>> OpenCliModel(const std::string& path_flag, int threads,
                                                 bool load_tokenizer, bool exact_matmul) {
  if (threads < 0) return InvalidArgumentError("threads must be >= 0 (0 = all cores)");
  auto m = std::make_unique<CliModel>();
  ASSIGN_OR_RETURN(m->path, ResolveLlmPath(path_flag));
  m->pool = std::make_unique<ThreadPool>(threads);
  CpuBackendOptions bo;
  bo.pool = m->pool.get();
  bo.exact_matmul = exact_matmul;
  ASSIGN_OR_RETURN(m->backend, CreateCpuBackend(bo));
  model::LoadModelOptions lo;
  lo.load_tokenizer = load_tokenizer;
  ASSIGN_OR_RETURN(m->loaded, model::LoadModel(m->path, m->backend.get(), lo));
  return m;
}

}  // namespace muninn::tools
