// Recurrent-depth core (Huginn layout) on a mid-size random checkpoint the bench writes itself
// (HuginnWriter: n_embd 512, 8 heads, MLP 1536, vocabulary 4096, layers 2/4/2, matrices bf16 at
// load as for huginn-0125). Random weights say nothing about quality; they give the cost of the
// recurrence. Items/s are tokens/s.
//
//   BM_HuginnDecode/r/share     one decode token at a 64-token context, r iterations, KV "full"
//                               (share 0) or compress-s4 (share 1); counter kv_bytes_per_token
//   BM_HuginnAdaptive/r/c/k     16 greedy tokens, at most r iterations, exit criterion c (0: none,
//                               1: kl at 5e-4, 2: latent-diff at 0.03; min 2 steps) on core k
//                               (0: state_damp 0.6, barely contractive; 1: 0.1, converging fast
//                               as a trained core does); counter mean_steps = mean exit step
//   BM_HuginnSpeculative/d/L    16 greedy tokens at r = 32 drafting with d iterations, L ahead
//                               (d = 0: plain decoding); counter accept_rate
#include <filesystem>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

#include <benchmark/benchmark.h>

#include "muninn/core/cpu_backend.h"
#include "muninn/core/thread_pool.h"
#include "muninn/model/generator.h"
#include "muninn/model/huginn_writer.h"
#include "muninn/model/model_loader.h"

namespace muninn::model {
namespace {

struct Fixture {
  std::string dir;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Backend> backend;
  LoadedModel loaded;
  ~Fixture() {
    loaded = LoadedModel{};
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

// core 0: state_damp 0.6, core 1: state_damp 0.1.
Fixture* GetFixture(std::string* error, int core = 0) {
  static std::unique_ptr<Fixture> fixtures[2];
  std::unique_ptr<Fixture>& fixture = fixtures[core == 0 ? 0 : 1];
  if (fixture) return fixture.get();
  auto f = std::make_unique<Fixture>();
  f->dir = (std::filesystem::temp_directory_path() /
            ("muninn_huginn_bench_" + std::to_string(::getpid()) + "_" + std::to_string(core)))
               .string();
  HuginnWriterOptions o;
  o.n_embd = 512;
  o.n_head = 8;
  o.n_ff = 1536;
  o.n_vocab = 4096;
  o.mean_recurrence = 32;
  o.block_size = 1024;
  o.state_damp = core == 0 ? 0.6 : 0.1;
  if (Status st = WriteRandomHuginn(f->dir, o); !st.ok()) {
    *error = st.ToString();
    return nullptr;
  }
  f->pool = std::make_unique<ThreadPool>(0);
  CpuBackendOptions bo;
  bo.pool = f->pool.get();
  auto backend = CreateCpuBackend(bo);
  if (!backend.ok()) {
    *error = backend.status().ToString();
    return nullptr;
  }
  f->backend = std::move(backend).value();
  LoadModelOptions lo;
  lo.load_tokenizer = false;
  lo.huginn_matrix_dtype = DType::kBF16;
  auto loaded = LoadModel(f->dir, f->backend.get(), lo);
  if (!loaded.ok()) {
    *error = loaded.status().ToString();
    return nullptr;
  }
  f->loaded = std::move(loaded).value();
  fixture = std::move(f);
  return fixture.get();
}

std::vector<TokenId> Ids(int64_t n) {
  std::vector<TokenId> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = static_cast<TokenId>((i * 37 + 11) % 4096);
  return ids;
}

void BM_HuginnDecode(benchmark::State& state) {
  std::string error;
  Fixture* f = GetFixture(&error);
  if (f == nullptr) return state.SkipWithError(error.c_str());
  Model& m = *f->loaded.model;
  const int32_t r = static_cast<int32_t>(state.range(0));
  KvCacheOptions co;
  co.n_ctx = 65;
  co.max_steps = r;
  if (state.range(1) == 1) {
    co.share = KvShare::kCompressS;
    co.share_k = 4;
  }
  auto cache = m.NewKvCache(co);
  if (!cache.ok()) return state.SkipWithError(cache.status().ToString().c_str());
  const std::vector<TokenId> ids = Ids(65);
  ForwardOptions fo;
  fo.steps = r;
  auto pre = m.Forward(std::span<const TokenId>(ids.data(), 64), cache->get(), fo);
  if (!pre.ok()) return state.SkipWithError(pre.status().ToString().c_str());
  const TokenId one[] = {ids.back()};
  for (auto _ : state) {
    auto out = m.Forward(one, cache->get(), fo);
    if (!out.ok()) return state.SkipWithError(out.status().ToString().c_str());
    benchmark::DoNotOptimize(out->logits.data());
    state.PauseTiming();
    (*cache)->Rollback(1).IgnoreError();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["kv_bytes_per_token"] = static_cast<double>((*cache)->bytes_per_token());
}
BENCHMARK(BM_HuginnDecode)
    ->ArgsProduct({{1, 4, 8, 32}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

GenerateOptions GreedyOptions(int32_t r) {
  GenerateOptions go;
  go.max_tokens = 16;
  go.sampler = SamplerOptions::Greedy();
  go.stop_at_eog = false;
  go.recurrence.steps = r;
  go.recurrence.init = StateInit::kZero;
  go.recurrence.warm_start = WarmStart::kOff;
  return go;
}

void RunGenerate(benchmark::State& state, const GenerateOptions& go, int32_t max_steps,
                 int core = 0) {
  std::string error;
  Fixture* f = GetFixture(&error, core);
  if (f == nullptr) return state.SkipWithError(error.c_str());
  Model& m = *f->loaded.model;
  KvCacheOptions co;
  co.n_ctx = 128;
  co.max_steps = max_steps;
  auto cache = m.NewKvCache(co);
  if (!cache.ok()) return state.SkipWithError(cache.status().ToString().c_str());
  const std::vector<TokenId> prompt = Ids(16);
  GenerateResult last;
  int64_t tokens = 0;
  for (auto _ : state) {
    (*cache)->Clear();
    auto r = Generate(m, **cache, nullptr, prompt, go);
    if (!r.ok()) return state.SkipWithError(r.status().ToString().c_str());
    tokens += static_cast<int64_t>(r->tokens.size());
    last = std::move(r).value();
  }
  state.SetItemsProcessed(tokens);
  state.counters["mean_steps"] = last.mean_steps();
  if (last.n_drafted > 0) {
    state.counters["accept_rate"] =
        static_cast<double>(last.n_accepted) / static_cast<double>(last.n_drafted);
  }
}

void BM_HuginnAdaptive(benchmark::State& state) {
  GenerateOptions go = GreedyOptions(static_cast<int32_t>(state.range(0)));
  constexpr ExitKind kKinds[] = {ExitKind::kNone, ExitKind::kKl, ExitKind::kLatentDiff};
  go.recurrence.exit.kind = kKinds[state.range(1)];
  go.recurrence.exit.min_steps = 2;
  RunGenerate(state, go, static_cast<int32_t>(state.range(0)), static_cast<int>(state.range(2)));
}
BENCHMARK(BM_HuginnAdaptive)
    ->Args({32, 0, 1})->Args({32, 1, 0})->Args({32, 1, 1})->Args({32, 2, 0})->Args({32, 2, 1})
    ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

void BM_HuginnSpeculative(benchmark::State& state) {
  GenerateOptions go = GreedyOptions(32);
  go.recurrence.draft_steps = static_cast<int32_t>(state.range(0));
  go.recurrence.lookahead = static_cast<int32_t>(state.range(1));
  RunGenerate(state, go, 32);
}
BENCHMARK(BM_HuginnSpeculative)
    ->Args({0, 1})->Args({4, 4})->Args({4, 8})->Args({8, 8})
    ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

}  // namespace
}  // namespace muninn::model
