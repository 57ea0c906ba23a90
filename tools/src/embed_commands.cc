// `muninn embed -m MODEL_DIR -p TEXT [-p TEXT...] [-t THREADS] [--json]`: sentence embeddings from
// a BERT encoder folder (default: models/all-MiniLM-L6-v2 under the repository root).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "app_config.h"
#include "command_registry.h"
#include "muninn/core/cpu_backend.h"
#include "muninn/core/thread_pool.h"
#include "muninn/model/bert_encoder.h"

namespace muninn::tools {
namespace {

namespace fs = std::filesystem;

constexpr const char* kDefaultEmbedder = "models/all-MiniLM-L6-v2";

// The default model folder above the executable or the working directory; the relative path
// itself when none is found (the error then names it).
std::string DefaultEmbedderDir() {
  auto cfg = FindAboveExeOrCwd(std::string(kDefaultEmbedder) + "/config.json");
  return cfg ? fs::path(*cfg).parent_path().string() : kDefaultEmbedder;
}

struct EmbedFlags {
  std::string model;
  std::vector<std::string> texts;
  int threads = 0;
  bool json = false;
};

int RunEmbed(const EmbedFlags& f) {
  if (f.texts.empty()) {
    std::fprintf(stderr, "muninn embed: give at least one text with -p\n");
    return 2;
  }
  const std::string dir = f.model.empty() ? DefaultEmbedderDir() : f.model;
  ThreadPool pool(f.threads);  // 0: every hardware thread
  CpuBackendOptions bo;
  bo.pool = &pool;
  auto backend = CreateCpuBackend(bo);
  if (!backend.ok()) {
    std::fprintf(stderr, "muninn embed: %s\n", backend.status().ToString().c_str());
    return 1;
  }
  model::BertEncoderOptions eo;
  eo.backend = backend->get();
  auto encoder = model::BertEncoder::Load(dir, eo);
  if (!encoder.ok()) {
    std::fprintf(stderr, "muninn embed: %s\n", encoder.status().ToString().c_str());
    return 1;
  }
  model::BertEncoder& enc = **encoder;
  std::vector<size_t> n_tokens;
  for (const std::string& t : f.texts) {
    auto ids = enc.Tokenize(t);
    n_tokens.push_back(ids.ok() ? ids->size() : 0);
  }
  const auto start = std::chrono::steady_clock::now();
  auto emb = enc.Embed(f.texts);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!emb.ok()) {
    std::fprintf(stderr, "muninn embed: %s\n", emb.status().ToString().c_str());
    return 1;
  }
  const size_t dim = static_cast<size_t>(enc.dim());
  if (f.json) {
    nlohmann::json out = {{"model", dir}, {"dim", dim}, {"seconds", secs}};
    nlohmann::json list = nlohmann::json::array();
    for (size_t i = 0; i < f.texts.size(); ++i) {
      std::vector<float> v(emb->begin() + static_cast<std::ptrdiff_t>(i * dim),
                           emb->begin() + static_cast<std::ptrdiff_t>((i + 1) * dim));
      list.push_back({{"text", f.texts[i]}, {"n_tokens", n_tokens[i]}, {"embedding", v}});
    }
    out["embeddings"] = std::move(list);
    // Texts may hold invalid UTF-8: replace it rather than throw.
    std::printf("%s\n",
                out.dump(1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::fprintf(stderr, "%zu texts, %zu dims, %.1f ms\n", f.texts.size(), dim, secs * 1e3);
    for (size_t i = 0; i < f.texts.size(); ++i) {
      std::printf("%zu\t%zu tokens\t", i, n_tokens[i]);
      for (size_t j = 0; j < dim; ++j) {
        std::printf(j == 0 ? "%.6f" : " %.6f", static_cast<double>((*emb)[i * dim + j]));
      }
      std::printf("\n");
    }
  }
  return 0;
}

}  // namespace

void RegisterEmbedCommands(CLI::App& app, CommandContext& ctx) {
  auto flags = std::make_shared<EmbedFlags>();
  auto* cmd = app.add_subcommand(
      "embed", "Sentence embeddings (mean-pooled, L2-normalised) from a BERT encoder folder");
  cmd->add_option("-m,--model", flags->model,
                  std::string("BERT folder (default: ") + kDefaultEmbedder +
                      " under the repository root)");
  cmd->add_option("-p,--prompt", flags->texts, "Text to embed (repeatable)")->required();
  cmd->add_option("-t,--threads", flags->threads, "Threads (default: all hardware threads)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--json", flags->json, "Print JSON");
  cmd->callback([&ctx, flags] { ctx.exit_code = RunEmbed(*flags); });
}

}  // namespace muninn::tools
