// CPU attention throughput at SmolLM2-135M's head shape (n_head 9, n_head_kv 3, head_dim 64) on
// 2 threads: decode (T = 1) and a prefill chunk (T = 512 causal queries at the end of the keys),
// over 4k / 32k / 100k local keys, f32 and f16 K/V. Counters: tokens/s (queries per second),
// bytes_per_second (K and V bytes streamed; decode is bound by this, compare with the machine's
// memory bandwidth) and GFLOP/s (2 * (d + dv) flops per visible query-key pair).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "muninn/core/backend.h"
#include "muninn/core/cpu_backend.h"
#include "muninn/core/fp16.h"
#include "muninn/core/tensor.h"
#include "muninn/core/thread_pool.h"

namespace muninn {
namespace {

constexpr int64_t kHeads = 9, kHeadsKv = 3, kHeadDim = 64;

Tensor RandomTensor(std::mt19937& rng, DType dtype, const Shape& shape) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Tensor t = *Tensor::Empty(dtype, shape);
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    if (dtype == DType::kF16) {
      t.data_as<uint16_t>()[i] = Fp32ToFp16(dist(rng));
    } else {
      t.data_as<float>()[i] = dist(rng);
    }
  }
  return t;
}

// Args: T (queries), S (local keys), 1 for f16 K/V, 0 for f32.
void BM_Attention(benchmark::State& state) {
  const int64_t T = state.range(0), S = state.range(1);
  const DType kv = state.range(2) ? DType::kF16 : DType::kF32;
  std::mt19937 rng(42);
  const Tensor q = RandomTensor(rng, DType::kF32, {T, kHeads, kHeadDim});
  const Tensor k = RandomTensor(rng, kv, {S, kHeadsKv, kHeadDim});
  const Tensor v = RandomTensor(rng, kv, {S, kHeadsKv, kHeadDim});
  Tensor out = *Tensor::Empty(DType::kF32, {T, kHeads, kHeadDim});
  ThreadPool pool(2);
  CpuBackendOptions opts;
  opts.pool = &pool;
  auto backend = std::move(*CreateCpuBackend(opts));
  const AttentionParams params;  // causal, 1/sqrt(d)
  for (auto _ : state) {
    const Status st = backend->Attention(q, k, v, Tensor(), Tensor(), params, &out);
    if (!st.ok()) {
      state.SkipWithError(st.ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  // Visible query-key pairs under the causal mask (query t sees S - T + t + 1 keys).
  const double pairs = static_cast<double>(T) * static_cast<double>(S - T) +
                       static_cast<double>(T) * static_cast<double>(T + 1) / 2.0;
  const double iters = static_cast<double>(state.iterations());
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(T) * iters,
                                                  benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(
      pairs * kHeads * 2.0 * (2 * kHeadDim) * iters * 1e-9, benchmark::Counter::kIsRate);
  state.SetBytesProcessed(state.iterations() *
                          static_cast<int64_t>(k.nbytes() + v.nbytes()));
  state.SetLabel(std::string(DTypeName(kv)) + " K/V");
}

// Decode as the model runs it (args: S, threads): one query over S cached f16 keys in each of kLayers layers per
// iteration, so K/V (kLayers * S * 768 bytes: 377 MB at S = 16384) stream from DRAM rather than
// sitting in the cache the way one layer's do in BM_AttentionDecode. Compare bytes_per_second
// with BM_StreamRead at 153600000 (DRAM). With weights = 1, the pool also sums a 96.6 MB buffer
// (SmolLM2-135M Q4_1's weights per token) in 30 slices, one before each layer's attention, as
// decode does: small K/V (S = 100, 612: the 512 memory excerpt tokens) then leave the L3 between
// tokens as they do in the model, and time(S = 612) - time(S = 100) is what the excerpt costs
// there (compare with `muninn bench --memory-depth`).
void BM_AttentionDecodeLayers(benchmark::State& state) {
  constexpr int kLayers = 30;  // SmolLM2-135M
  const int64_t S = state.range(0);
  const DType kv = state.range(2) != 0 ? DType::kQ8_0 : DType::kF16;  // the KV cache's dtype
  std::mt19937 rng(7);
  ThreadPool pool(static_cast<int>(state.range(1)));
  CpuBackendOptions opts;
  opts.pool = &pool;
  auto backend = std::move(*CreateCpuBackend(opts));
  const Tensor q = RandomTensor(rng, DType::kF32, {1, kHeads, kHeadDim});
  // One random layer's K/V, copied into every layer (filling 377 MB randomly takes too long).
  Tensor k0 = *Tensor::Empty(kv, {S, kHeadsKv, kHeadDim});
  Tensor v0 = *Tensor::Empty(kv, {S, kHeadsKv, kHeadDim});
  if (!backend->Copy(RandomTensor(rng, DType::kF32, {S, kHeadsKv, kHeadDim}), &k0).ok() ||
      !backend->Copy(RandomTensor(rng, DType::kF32, {S, kHeadsKv, kHeadDim}), &v0).ok()) {
    state.SkipWithError("converting K/V");
    return;
  }
  std::vector<Tensor> ks, vs;
  for (int l = 0; l < kLayers; ++l) {
    ks.push_back(*Tensor::Empty(kv, {S, kHeadsKv, kHeadDim}));
    vs.push_back(*Tensor::Empty(kv, {S, kHeadsKv, kHeadDim}));
    std::memcpy(ks.back().data(), k0.data(), static_cast<size_t>(k0.nbytes()));
    std::memcpy(vs.back().data(), v0.data(), static_cast<size_t>(v0.nbytes()));
  }
  Tensor out = *Tensor::Empty(DType::kF32, {1, kHeads, kHeadDim});
  const AttentionParams params;
  constexpr int64_t kWeightBytes = 96600000;
  const bool weights = state.range(3) != 0;
  Tensor wbuf = weights ? *Tensor::Zeros(DType::kU8, {kWeightBytes}) : Tensor();
  const int64_t slice_words = kWeightBytes / 8 / kLayers;
  uint64_t sums[2] = {0, 0};
  for (auto _ : state) {
    for (int l = 0; l < kLayers; ++l) {
      if (weights) {
        const auto* words = static_cast<const uint64_t*>(wbuf.data()) + l * slice_words;
        pool.RunOnAll([&](int i, int nt) {
          uint64_t acc = 0;
          for (int64_t w = slice_words * i / nt; w < slice_words * (i + 1) / nt; ++w) {
            acc += words[w];
          }
          sums[i % 2] += acc;
        });
      }
      const Status st = backend->Attention(q, ks[static_cast<size_t>(l)],
                                           vs[static_cast<size_t>(l)], Tensor(), Tensor(), params,
                                           &out);
      if (!st.ok()) {
        state.SkipWithError(st.ToString().c_str());
        return;
      }
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::DoNotOptimize(sums);
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetBytesProcessed(state.iterations() * kLayers *
                          static_cast<int64_t>(k0.nbytes() + v0.nbytes()));
  state.SetLabel(std::string(DTypeName(kv)) + " K/V, 30 layers" +
                 (weights ? ", 96.6 MB of weights streamed" : ""));
}
BENCHMARK(BM_AttentionDecodeLayers)
    ->Args({100, 2, 0, 0})
    ->Args({640, 2, 0, 0})
    ->Args({4096, 2, 0, 0})
    ->Args({16384, 2, 0, 0})
    ->Args({16384, 1, 0, 0})
    ->Args({100, 2, 1, 0})
    ->Args({640, 2, 1, 0})
    ->Args({4096, 2, 1, 0})
    ->Args({16384, 2, 1, 0})
    ->Args({100, 2, 0, 1})
    ->Args({612, 2, 0, 1})
    ->Args({100, 2, 1, 1})
    ->Args({612, 2, 1, 1})
    ->Args({100, 1, 0, 1})
    ->Args({612, 1, 0, 1})
    ->ArgNames({"S", "threads", "q8", "weights"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

void DecodeArgs(benchmark::internal::Benchmark* b) {
  for (int64_t s : {4096, 32768, 100000}) {
    for (int64_t f16 : {0, 1}) b->Args({1, s, f16});
  }
}

void PrefillArgs(benchmark::internal::Benchmark* b) {
  for (int64_t s : {4096, 32768, 100000}) {
    for (int64_t f16 : {0, 1}) b->Args({512, s, f16});
  }
}

// The yardstick for decode: 2 threads summing `bytes` of memory (64-bit words), the same bytes
// that decode streams for K and V at the matching S.
void BM_StreamRead(benchmark::State& state) {
  const int64_t bytes = state.range(0);
  Tensor buf = *Tensor::Zeros(DType::kU8, {bytes});
  const auto* words = static_cast<const uint64_t*>(buf.data());
  const int64_t n = bytes / 8;
  ThreadPool pool(2);
  uint64_t sums[2] = {0, 0};
  for (auto _ : state) {
    pool.RunOnAll([&](int i, int nt) {
      uint64_t acc = 0;
      for (int64_t w = n * i / nt; w < n * (i + 1) / nt; ++w) acc += words[w];
      sums[i] += acc;
    });
    benchmark::DoNotOptimize(sums);
  }
  state.SetBytesProcessed(state.iterations() * bytes);
}
// K + V bytes at S = 100000: f32 and f16.
BENCHMARK(BM_StreamRead)->Arg(2 * 100000 * kHeadsKv * kHeadDim * 4)
    ->Arg(2 * 100000 * kHeadsKv * kHeadDim * 2)->Unit(benchmark::kMicrosecond)->UseRealTime();

BENCHMARK(BM_Attention)->Name("BM_AttentionDecode")->Apply(DecodeArgs)->ArgNames({"T", "S", "f16"})
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Attention)->Name("BM_AttentionPrefill")->Apply(PrefillArgs)
    ->ArgNames({"T", "S", "f16"})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace muninn
