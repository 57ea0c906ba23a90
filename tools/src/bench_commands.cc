// `muninn bench`: prompt-processing (ppN) and text-generation (tgN) throughput, measured the way
// llama-bench measures it: random token ids, one warm-up run that is not counted; ppN = N tokens
// in one batched forward, tgN = N single-token decode steps; tokens/s reported as mean ± sample
// stddev over the repetitions.
//
// Depth (-d D, llama-bench's -d): each test starts after a D-token context (random ids, processed
// in 512-token batches, not timed) is already in the KV cache; "tg128 @ d4096". As llama-bench
// caches the depth state, the context is built once and every repetition rolls the cache back to
// D positions; several depths share one cache (a shorter depth is a rollback of a longer one's
// prefix, a longer one extends it). Depth 0 is an empty cache, as before.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "command_registry.h"
#include "context_bench.h"
#include "device_backend.h"
#include "llm_cli.h"
#include "muninn/core/cpu_features.h"
#include "muninn/core/dtype.h"

namespace muninn::tools {
namespace {

struct BenchFlags {
  std::string model;
  int32_t n_prompt = 512;
  int32_t n_gen = 128;
  int threads = 0;
  int32_t reps = 5;
  bool json = false;
  bool exact = false;
  std::string device = "cpu";
  int gpu_layers = -1;
  // --memory-depth N: the long-context benchmark (context_bench.h) instead of ppN/tgN.
  int64_t memory_depth = 0;
  RuntimeFlags rt;
  std::string text;
  int32_t depth_prompt = 64;
  // -d: KV-cache depths for ppN/tgN (llama-bench's -d); {0} when not given.
  std::vector<int64_t> depths;
  // Depth + test tokens past the model's trained context are an error unless this is set (speed
  // can be measured there; output quality is not defined).
  bool allow_ctx_overflow = false;
  // -k/--cache-type: the KV cache's dtype for ppN/tgN (llama-bench's -ctk/-ctv, one for both).
  std::string cache_type = "f16";
};

struct BenchResult {
  std::string test;  // "pp512", "tg128", "tg128 @ d4096"
  int32_t n_prompt = 0;
  int32_t n_gen = 0;
  int64_t n_depth = 0;
  std::vector<double> samples_ts;
  double mean = 0.0;
  double stddev = 0.0;
};

using Clock = std::chrono::steady_clock;

// Token ids from a fixed xorshift stream: the same "text" in every run and repetition.
std::vector<model::TokenId> RandomIds(int32_t n, int32_t n_vocab, uint64_t seed) {
  std::vector<model::TokenId> ids(static_cast<size_t>(n));
  uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (auto& id : ids) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    id = static_cast<model::TokenId>(x % static_cast<uint64_t>(n_vocab));
  }
  return ids;
}

// Brings the cache to exactly `depth` positions holding depth_ids[0, depth): a rollback when it
// holds more, batched forwards when it holds fewer. Precondition: the cache holds a prefix of
// depth_ids (RunOnce rolls its test tokens back afterwards).
Status FillToDepth(model::Model& m, model::KvCache& cache, int64_t depth,
                   const std::vector<model::TokenId>& depth_ids) {
  if (cache.n_past() > depth) return cache.Rollback(cache.n_past() - depth);
  constexpr int64_t kBatch = 512;  // llama-bench's default micro-batch
  while (cache.n_past() < depth) {
    const int64_t begin = cache.n_past();
    const int64_t n = std::min(kBatch, depth - begin);
    std::span<const model::TokenId> batch(depth_ids.data() + begin, static_cast<size_t>(n));
    RETURN_IF_ERROR(m.Forward(batch, &cache).status());
  }
  return m.backend()->Synchronize();
}

// Seconds for one repetition of the test; the cache is first brought back to the test's depth.
StatusOr<double> RunOnce(model::Model& m, model::KvCache& cache, const BenchResult& b,
                         const std::vector<model::TokenId>& ids,
                         const std::vector<model::TokenId>& depth_ids) {
  if (b.n_depth == 0) {
    cache.Clear();
  } else {
    RETURN_IF_ERROR(FillToDepth(m, cache, b.n_depth, depth_ids));
  }
  const auto t0 = Clock::now();
  if (b.n_prompt > 0) {
    RETURN_IF_ERROR(m.Forward(ids, &cache).status());
  } else {
    for (int32_t i = 0; i < b.n_gen; ++i) {
      const model::TokenId one[] = {ids[static_cast<size_t>(i)]};
      RETURN_IF_ERROR(m.Forward(one, &cache).status());
    }
  }
  RETURN_IF_ERROR(m.backend()->Synchronize());
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  // Drop the test's own tokens, so that the cache again holds a prefix of depth_ids only (the
  // next depth may extend it).
  RETURN_IF_ERROR(cache.Rollback(cache.n_past() - b.n_depth));
  return secs;
}

int RunBench(const BenchFlags& f) {
  if (f.n_prompt < 0 || f.n_gen < 0 || f.reps < 1 || (f.n_prompt == 0 && f.n_gen == 0)) {
    std::fprintf(stderr, "muninn bench: need -p >= 0, -n >= 0 (not both 0) and -r >= 1\n");
    return 1;
  }
  std::vector<int64_t> depths = f.depths.empty() ? std::vector<int64_t>{0} : f.depths;
  for (int64_t d : depths) {
    if (d < 0) {
      std::fprintf(stderr, "muninn bench: -d/--depth must be >= 0 (got %lld)\n",
                   static_cast<long long>(d));
      return 2;
    }
  }
  auto cm = OpenCliModel(f.model, f.threads, /*load_tokenizer=*/false, f.exact, f.device, {},
                         f.gpu_layers);
  if (!cm.ok()) {
    std::fprintf(stderr, "muninn bench: %s\n", cm.status().ToString().c_str());
    return 1;
  }
  model::Model& m = *(*cm)->loaded.model;
  const int64_t max_depth = *std::max_element(depths.begin(), depths.end());
  const int64_t n_ctx = max_depth + std::max(f.n_prompt, f.n_gen);
  const int32_t n_ctx_train = m.config().n_ctx_train;
  if (n_ctx_train > 0 && n_ctx > n_ctx_train && !f.allow_ctx_overflow) {
    std::fprintf(stderr,
                 "muninn bench: depth %lld + %d test tokens = %lld positions exceeds the model's "
                 "trained context of %d tokens; use a smaller -d, or pass --allow-ctx-overflow to "
                 "measure speed past it anyway (as llama-bench does)\n",
                 static_cast<long long>(max_depth), std::max(f.n_prompt, f.n_gen),
                 static_cast<long long>(n_ctx), n_ctx_train);
    return 2;
  }
  model::KvCacheOptions co;
  co.n_ctx = n_ctx;
  const auto cache_dtype = DTypeFromName(f.cache_type);
  if (!cache_dtype) {
    std::fprintf(stderr, "muninn bench: unknown --cache-type '%s' (f16, f32 or q8_0)\n",
                 f.cache_type.c_str());
    return 2;
  }
  co.dtype = *cache_dtype;
  auto cache = m.NewKvCache(co);
  if (!cache.ok()) {
    std::fprintf(stderr, "muninn bench: %s\n", cache.status().ToString().c_str());
    return 1;
  }
  std::vector<BenchResult> tests;
  for (int64_t d : depths) {  // llama-bench's order: depth outermost, pp before tg
    const std::string at = d > 0 ? " @ d" + std::to_string(d) : "";
    if (f.n_prompt > 0) {
      tests.push_back({"pp" + std::to_string(f.n_prompt) + at, f.n_prompt, 0, d, {}, 0, 0});
    }
    if (f.n_gen > 0) tests.push_back({"tg" + std::to_string(f.n_gen) + at, 0, f.n_gen, d, {}, 0, 0});
  }
  // Depth context: its own id stream, so that it never equals the test tokens.
  const std::vector<model::TokenId> depth_ids =
      RandomIds(static_cast<int32_t>(max_depth), m.config().n_vocab, 7);

  for (BenchResult& b : tests) {
    const int32_t n = b.n_prompt > 0 ? b.n_prompt : b.n_gen;
    const std::vector<model::TokenId> ids = RandomIds(n, m.config().n_vocab, 42);
    for (int32_t r = -1; r < f.reps; ++r) {  // r = -1: warm-up
      auto secs = RunOnce(m, **cache, b, ids, depth_ids);
      if (!secs.ok()) {
        std::fprintf(stderr, "muninn bench: %s: %s\n", b.test.c_str(),
                     secs.status().ToString().c_str());
        return 1;
      }
      if (r >= 0) b.samples_ts.push_back(n / *secs);
    }
    double sum = 0.0;
    for (double v : b.samples_ts) sum += v;
    b.mean = sum / b.samples_ts.size();
    double var = 0.0;
    for (double v : b.samples_ts) var += (v - b.mean) * (v - b.mean);
    b.stddev = b.samples_ts.size() > 1 ? std::sqrt(var / (b.samples_ts.size() - 1)) : 0.0;
  }

  int64_t n_params = 0;
  const model::ModelWeights& w = m.weights();
  n_params += w.tok_embd.numel() + w.output_norm.numel();
  if (!m.tied_head()) n_params += w.output.numel();
  for (const model::LayerWeights& l : w.layers) {
    for (const Tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.w_gate,
                            &l.w_up, &l.w_down}) {
      n_params += t->numel();
    }
  }
  const int threads = (*cm)->pool->num_threads();
  // The KV cache's dtype joins the backend's name when it is not llama-bench's default, f16.
  const std::string backend =
      m.backend()->name() + (co.dtype == DType::kF16 ? "" : " kv " + f.cache_type) +
      (m.host_layers() > 0
           ? " ngl " + std::to_string(m.config().n_layer - m.host_layers())
           : std::string());
  if (f.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const BenchResult& b : tests) {
      out.push_back({{"model", (*cm)->path},
                     {"model_size", m.weight_bytes()},
                     {"model_n_params", n_params},
                     {"backend", backend},
                     {"cache_type", f.cache_type},
                     {"n_threads", threads},
                     {"test", b.test},
                     {"n_prompt", b.n_prompt},
                     {"n_gen", b.n_gen},
                     {"n_depth", b.n_depth},
                     {"avg_ts", b.mean},
                     {"stddev_ts", b.stddev},
                     {"samples_ts", b.samples_ts}});
    }
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("| %-40s | %10s | %8s | %-12s | %7s | %15s | %20s |\n", "model", "size", "params",
              "backend", "threads", "test", "t/s");
  std::printf("| %.40s | %.10s | %.8s | %.12s | %.7s | %.15s | %.20s |\n",
              "----------------------------------------", "----------", "--------",
              "------------", "-------", "---------------", "--------------------");
  const std::string name = std::filesystem::path((*cm)->path).filename().string();
  for (const BenchResult& b : tests) {
    char ts[64];
    std::snprintf(ts, sizeof(ts), "%.2f ± %.2f", b.mean, b.stddev);
    std::printf("| %-40.40s | %6.2f MiB | %6.1f M | %-12s | %7d | %15s | %20s |\n", name.c_str(),
                m.weight_bytes() / 1048576.0, n_params / 1e6, backend.c_str(), threads,
                b.test.c_str(), ts);
  }
  return 0;
}

}  // namespace

void RegisterBenchCommands(CLI::App& app, CommandContext& ctx) {
  auto* cmd = app.add_subcommand(
      "bench", "Prompt processing (ppN) and generation (tgN) speed, llama-bench style");
  auto f = std::make_shared<BenchFlags>();
  cmd->add_option("-m,--model", f->model,
                  std::string("GGUF file or Hugging Face folder (default: ") + kDefaultLlmPath + ")");
  cmd->add_option("-p,--n-prompt", f->n_prompt, "Prompt tokens per pp test (0 = skip)")
      ->capture_default_str();
  cmd->add_option("-n,--n-gen", f->n_gen, "Generated tokens per tg test (0 = skip)")
      ->capture_default_str();
  cmd->add_option("-t,--threads", f->threads, "Threads (0 = all cores)")->capture_default_str();
  cmd->add_flag("--exact", f->exact,
                "Exact MatMul: f32 activations and dequantized weight rows (see generate --exact)");
  cmd->add_option("--device", f->device, kDeviceHelp)->capture_default_str();
  cmd->add_option("--gpu-layers,--ngl", f->gpu_layers, kGpuLayersHelp)->capture_default_str();
  cmd->add_option("-r,--repetitions", f->reps, "Repetitions per test")->capture_default_str();
  cmd->add_flag("--json", f->json, "Print JSON");
  cmd->add_option("-d,--depth,--n-depth", f->depths,
                  "KV-cache depth(s) before each test, comma-separated, like llama-bench's -d "
                  "(e.g. -d 0,4096: tg128 and \"tg128 @ d4096\"); default 0")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  cmd->add_option("-k,--cache-type", f->cache_type,
                  "KV cache dtype for ppN/tgN: f16 (as llama-bench), f32, or q8_0 (CPU; like "
                  "llama-bench's -ctk/-ctv q8_0); --memory-depth uses the config's kv_cache")
      ->capture_default_str();
  cmd->add_flag("--allow-ctx-overflow", f->allow_ctx_overflow,
                "Allow depth + test tokens past the model's trained context (speed only)");
  cmd->add_option("--memory-depth", f->memory_depth,
                  "Long-context benchmark: ingest this many tokens of --text into a bank (time, "
                  "peak RSS, bytes per 1k tokens), then tgN with memory at depth 0 vs at this depth")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  cmd->add_option("--text", f->text, "Text for --memory-depth (default data/kjv.txt)");
  cmd->add_option("--prompt-tokens", f->depth_prompt, "Prompt tokens before decoding (--memory-depth)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--config", f->rt.config,
                  "Long-context configuration for --memory-depth (default configs/smollm2-135m.json)");
  cmd->add_option("--embedder", f->rt.embedder, "Embedder for --memory-depth (default from the config)");
  cmd->callback([&ctx, f] {
    if (f->memory_depth > 0) {
      if (f->exact || !f->depths.empty() || f->cache_type != "f16") {
        std::fprintf(stderr, "muninn bench: %s does not apply to --memory-depth\n",
                     f->exact             ? "--exact"
                     : !f->depths.empty() ? "-d/--depth"
                                          : "--cache-type (the config's kv_cache sets it)");
        ctx.exit_code = 2;
        return;
      }
      RuntimeFlags rt = f->rt;
      rt.model = f->model;
      rt.threads = f->threads;
      rt.device = f->device;  // the long-context runtime takes --device like ask and ingest
      rt.gpu_layers = f->gpu_layers;
      ContextBenchOptions o;
      o.depth_tokens = f->memory_depth;
      o.n_gen = f->n_gen > 0 ? f->n_gen : 128;
      o.n_prompt = f->depth_prompt;
      o.reps = f->reps;
      o.text_path = f->text;
      o.json = f->json;
      ctx.exit_code = RunContextBench(rt, o);
      return;
    }
    ctx.exit_code = RunBench(*f);
  });
}

}  // namespace muninn::tools
