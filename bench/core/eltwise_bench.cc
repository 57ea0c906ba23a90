// Throughput of the CPU row-wise ops at the shapes the models use, per kernel family and thread
// count. bytes_per_second counts the f32 bytes each op must read and write once (x in, y out;
// SwiGLU reads two inputs); compare with BM_MemRead/BM_MemCopy in quant_bench. The working sets
// (0.6 to 9 MiB) sit in L2/L3, as activations do between a model's matmuls.
//  - RmsNorm: SmolLM2 prefill [512, 576] and Huginn [64, 5280].
//  - Rope: SmolLM2 q [512, 9, 64] (halves) and Huginn q [128, 55, 96] (interleaved); the
//    per-token cos/sin table (double-precision angles) is included, so short heads cost more.
//  - Softmax: attention-score rows [512, 4096].
//  - SwiGlu: SmolLM2 FFN [512, 1536].
// Args: isa (0 scalar, 1 avx2, 2 avx512), threads, then the shape.
#include <benchmark/benchmark.h>

#include <memory>
#include <random>
#include <vector>

#include "muninn/core/cpu_backend.h"
#include "muninn/core/tensor.h"
#include "muninn/core/thread_pool.h"

namespace muninn {
namespace {

Tensor RandomF32(std::mt19937& rng, const Shape& shape, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  Tensor t = *Tensor::Empty(DType::kF32, shape);
  float* p = t.data_as<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

// Null (and the benchmark marked skipped) when the CPU lacks the requested kernel family.
std::unique_ptr<Backend> MakeBackend(benchmark::State& state, ThreadPool* pool) {
  CpuBackendOptions o;
  o.isa = static_cast<CpuIsa>(state.range(0));
  o.pool = pool;
  auto b = CreateCpuBackend(o);
  if (!b.ok()) {
    state.SkipWithError("kernel family not supported by this CPU");
    return nullptr;
  }
  state.SetLabel(CpuIsaName(o.isa));
  return std::move(b).value();
}

void SetBytes(benchmark::State& state, int64_t floats_moved) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * floats_moved * 4);
}

void BM_RmsNorm(benchmark::State& state) {
  ThreadPool pool(static_cast<int>(state.range(1)));
  auto be = MakeBackend(state, &pool);
  if (!be) return;
  const Shape shape{state.range(2), state.range(3)};
  std::mt19937 rng(1);
  const Tensor x = RandomF32(rng, shape, -2.0f, 2.0f);
  const Tensor w = RandomF32(rng, {shape[1]}, 0.5f, 1.5f);
  Tensor y = *Tensor::Empty(DType::kF32, shape);
  for (auto _ : state) {
    if (!be->RmsNorm(x, w, 1e-6f, &y).ok()) state.SkipWithError("RmsNorm failed");
    benchmark::DoNotOptimize(y.data());
  }
  SetBytes(state, 2 * shape.numel());
}

void BM_Rope(benchmark::State& state) {
  ThreadPool pool(static_cast<int>(state.range(1)));
  auto be = MakeBackend(state, &pool);
  if (!be) return;
  const Shape shape{state.range(2), state.range(3), state.range(4)};
  std::mt19937 rng(2);
  Tensor x = RandomF32(rng, shape, -2.0f, 2.0f);
  Tensor pos = *Tensor::Empty(DType::kI32, {shape[0]});
  for (int64_t t = 0; t < shape[0]; ++t) pos.data_as<int32_t>()[t] = static_cast<int32_t>(t + 1000);
  RopeParams p;
  p.layout = state.range(5) ? RopeLayout::kInterleaved : RopeLayout::kHalves;
  for (auto _ : state) {
    if (!be->Rope(x, pos, p, &x).ok()) state.SkipWithError("Rope failed");  // in place
    benchmark::DoNotOptimize(x.data());
  }
  SetBytes(state, 2 * shape.numel());
  state.counters["tokens/s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * shape[0]), benchmark::Counter::kIsRate);
}

void BM_Softmax(benchmark::State& state) {
  ThreadPool pool(static_cast<int>(state.range(1)));
  auto be = MakeBackend(state, &pool);
  if (!be) return;
  const Shape shape{state.range(2), state.range(3)};
  std::mt19937 rng(3);
  const Tensor x = RandomF32(rng, shape, -10.0f, 10.0f);
  Tensor y = *Tensor::Empty(DType::kF32, shape);
  for (auto _ : state) {
    if (!be->Softmax(x, 0.125f, &y).ok()) state.SkipWithError("Softmax failed");
    benchmark::DoNotOptimize(y.data());
  }
  SetBytes(state, 2 * shape.numel());
}

void BM_SwiGlu(benchmark::State& state) {
  ThreadPool pool(static_cast<int>(state.range(1)));
  auto be = MakeBackend(state, &pool);
  if (!be) return;
  const Shape shape{state.range(2), state.range(3)};
  std::mt19937 rng(4);
  const Tensor g = RandomF32(rng, shape, -6.0f, 6.0f);
  const Tensor u = RandomF32(rng, shape, -2.0f, 2.0f);
  Tensor y = *Tensor::Empty(DType::kF32, shape);
  for (auto _ : state) {
    if (!be->SwiGlu(g, u, &y).ok()) state.SkipWithError("SwiGlu failed");
    benchmark::DoNotOptimize(y.data());
  }
  SetBytes(state, 3 * shape.numel());
}

void IsaThreads(benchmark::internal::Benchmark* b, std::initializer_list<int64_t> shape) {
  for (int64_t isa : {0, 1, 2}) {
    for (int64_t threads : {1, 2}) {
      std::vector<int64_t> args = {isa, threads};
      args.insert(args.end(), shape.begin(), shape.end());
      b->Args(args);
    }
  }
}

BENCHMARK(BM_RmsNorm)
    ->ArgNames({"isa", "threads", "T", "D"})
    ->Apply([](auto* b) {
      IsaThreads(b, {512, 576});
    }) -> Apply([](auto* b) {
      IsaThreads(b, {64, 5280});
    }) -> UseRealTime();
BENCHMARK(BM_Rope)
    ->ArgNames({"isa", "threads", "T", "H", "hd", "interleaved"})
    ->Apply([](auto* b) {
      IsaThreads(b, {512, 9, 64, 0});
    }) -> Apply([](auto* b) {
      IsaThreads(b, {128, 55, 96, 1});
    }) -> UseRealTime();
BENCHMARK(BM_Softmax)
    ->ArgNames({"isa", "threads", "rows", "n"})
    ->Apply([](auto* b) {
      IsaThreads(b, {512, 4096});
    }) -> UseRealTime();
BENCHMARK(BM_SwiGlu)
    ->ArgNames({"isa", "threads", "T", "n_ff"})
    ->Apply([](auto* b) {
      IsaThreads(b, {512, 1536});
    }) -> UseRealTime();

}  // namespace
}  // namespace muninn
