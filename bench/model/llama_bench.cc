// Llama inference on the default model (SmolLM2-135M Q4_1, models/ under the source tree):
// batched prefill and single-token decode through the KV cache, plus the sampler on a 49152-entry
// vocabulary. Items/s are tokens/s. The model benchmarks report an error when the model is absent
// (run scripts/setup.sh). `muninn bench` is the llama-bench-style end-to-end figure.
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "muninn/core/cpu_backend.h"
#include "muninn/core/thread_pool.h"
#include "muninn/model/model_loader.h"
#include "muninn/model/sampler.h"

namespace muninn::model {
namespace {

std::string ModelPath() {
  // bench binaries run from the build tree; the model sits under the source root.
  for (std::filesystem::path p = std::filesystem::current_path(); !p.empty();
       p = p.parent_path()) {
    const auto candidate = p / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
    if (std::filesystem::exists(candidate)) return candidate.string();
    if (p == p.parent_path()) break;
  }
  return {};
}

struct Fixture {
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Backend> backend;
  LoadedModel loaded;
};

// One loaded model per thread count, kept for the whole run.
Fixture* GetFixture(int threads, std::string* error) {
  static std::vector<std::unique_ptr<Fixture>> fixtures(64);
  if (threads < 1 || threads >= 64) {
    *error = "bad thread count";
    return nullptr;
  }
  auto& slot = fixtures[static_cast<size_t>(threads)];
  if (slot) return slot.get();
  const std::string path = ModelPath();
  if (path.empty()) {
    *error = "models/SmolLM2-135M-Instruct.Q4_1.gguf not found; run scripts/setup.sh";
    return nullptr;
  }
  auto f = std::make_unique<Fixture>();
  f->pool = std::make_unique<ThreadPool>(threads);
  CpuBackendOptions bo;
  bo.pool = f->pool.get();
  auto backend = CreateCpuBackend(bo);
  if (!backend.ok()) {
    *error = backend.status().ToString();
    return nullptr;
  }
  f->backend = std::move(backend).value();
  LoadModelOptions no_tokenizer;
  no_tokenizer.load_tokenizer = false;
  auto loaded = LoadModel(path, f->backend.get(), no_tokenizer);
  if (!loaded.ok()) {
    *error = loaded.status().ToString();
    return nullptr;
  }
  f->loaded = std::move(loaded).value();
  slot = std::move(f);
  return slot.get();
}

std::vector<TokenId> Ids(int64_t n, int32_t n_vocab) {
  std::mt19937 rng(7);
  std::vector<TokenId> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = static_cast<TokenId>(rng() % static_cast<uint32_t>(n_vocab));
  return ids;
}

// args: {prompt tokens, threads}
void BM_LlamaPrefill(benchmark::State& state) {
  std::string error;
  Fixture* f = GetFixture(static_cast<int>(state.range(1)), &error);
  if (f == nullptr) return state.SkipWithError(error.c_str());
  Model& m = *f->loaded.model;
  const std::vector<TokenId> ids = Ids(state.range(0), m.config().n_vocab);
  KvCacheOptions co;
  co.n_ctx = state.range(0);
  auto cache = m.NewKvCache(co);
  if (!cache.ok()) return state.SkipWithError(cache.status().ToString().c_str());
  for (auto _ : state) {
    (*cache)->Clear();
    auto r = m.Forward(ids, cache->get());
    if (!r.ok()) return state.SkipWithError(r.status().ToString().c_str());
    benchmark::DoNotOptimize(r->logits.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_LlamaPrefill)->Args({64, 1})->Args({64, 2})->Args({512, 2})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// One decode step at a context of range(0) tokens. args: {context, threads}
void BM_LlamaDecodeStep(benchmark::State& state) {
  std::string error;
  Fixture* f = GetFixture(static_cast<int>(state.range(1)), &error);
  if (f == nullptr) return state.SkipWithError(error.c_str());
  Model& m = *f->loaded.model;
  const int64_t ctx = state.range(0);
  const std::vector<TokenId> ids = Ids(ctx + 1, m.config().n_vocab);
  KvCacheOptions co;
  co.n_ctx = ctx + 1;
  auto cache = m.NewKvCache(co);
  if (!cache.ok()) return state.SkipWithError(cache.status().ToString().c_str());
  if (ctx > 0) {
    auto r = m.Forward(std::span<const TokenId>(ids.data(), static_cast<size_t>(ctx)),
                       cache->get());
    if (!r.ok()) return state.SkipWithError(r.status().ToString().c_str());
  }
  const TokenId one[] = {ids.back()};
  for (auto _ : state) {
    auto r = m.Forward(one, cache->get());
    if (!r.ok()) return state.SkipWithError(r.status().ToString().c_str());
    benchmark::DoNotOptimize(r->logits.data());
    state.PauseTiming();
    (*cache)->Rollback(1).IgnoreError();  // keep the context length fixed
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LlamaDecodeStep)->Args({0, 1})->Args({0, 2})->Args({512, 2})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// Sampler on SmolLM2's vocabulary size. arg 0: 0 = greedy, 1 = default chain (top-k 40),
// 2 = top-p 0.95 over the full vocabulary (top-k off: the full sort).
void BM_Sampler(benchmark::State& state) {
  constexpr int kVocab = 49152;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> logits(kVocab);
  for (float& l : logits) l = nd(rng);
  SamplerOptions o;
  if (state.range(0) == 0) o = SamplerOptions::Greedy();
  if (state.range(0) == 2) {
    o.top_k = 0;
    o.min_p = 0.0f;
  }
  auto s = Sampler::Create(o);
  std::vector<TokenId> history(64, 5);
  for (auto _ : state) benchmark::DoNotOptimize(s->Sample(logits, history));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Sampler)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace muninn::model
