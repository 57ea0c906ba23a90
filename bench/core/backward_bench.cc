// Training kernels at SmolLM2-135M's shapes on 2 threads: attention forward (with lse) and
// backward over a 1024-token causal block with and without a 512-key memory block (n_head 9,
// n_head_kv 3, head_dim 64), and the fused head + cross-entropy over 49152 columns (n_embd 576).
// Counters: tokens/s (query rows per second).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "muninn/core/attention_backward.h"
#include "muninn/core/cross_entropy.h"
#include "muninn/core/thread_pool.h"

namespace muninn {
namespace {

std::vector<float> RandomVec(std::mt19937& rng, int64_t n, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

// Args: T (= S, causal), M (memory keys), 1 for the backward, 0 for the forward.
void BM_TrainAttention(benchmark::State& state) {
  AttentionTrainDims g;
  g.T = g.S = state.range(0);
  g.M = state.range(1);
  g.n_head = 9;
  g.n_head_kv = 3;
  g.d = g.dv = 64;
  const bool backward = state.range(2) != 0;
  std::mt19937 rng(42);
  const auto q = RandomVec(rng, g.T * g.n_head * g.d), k = RandomVec(rng, g.S * g.n_head_kv * g.d),
             v = RandomVec(rng, g.S * g.n_head_kv * g.dv);
  const auto mk = RandomVec(rng, std::max<int64_t>(g.M, 1) * g.n_head_kv * g.d),
             mv = RandomVec(rng, std::max<int64_t>(g.M, 1) * g.n_head_kv * g.dv);
  const auto dout = RandomVec(rng, g.T * g.n_head * g.dv);
  std::vector<float> out(dout.size()), lse(static_cast<size_t>(g.T * g.n_head));
  std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
  ThreadPool pool(2);
  AttentionForwardTrain(&pool, g, q.data(), k.data(), v.data(), nullptr, mk.data(), mv.data(),
                        out.data(), lse.data());
  for (auto _ : state) {
    if (backward) {
      AttentionBackward(&pool, g, q.data(), k.data(), v.data(), nullptr, mk.data(), mv.data(),
                        out.data(), lse.data(), dout.data(), dq.data(), dk.data(), dv.data(),
                        nullptr);
      benchmark::DoNotOptimize(dk.data());
    } else {
      AttentionForwardTrain(&pool, g, q.data(), k.data(), v.data(), nullptr, mk.data(), mv.data(),
                            out.data(), lse.data());
      benchmark::DoNotOptimize(out.data());
    }
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(g.T), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_TrainAttention)
    ->Args({1024, 0, 0})
    ->Args({1024, 0, 1})
    ->Args({1024, 512, 0})
    ->Args({1024, 512, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Args: T, rows per block.
void BM_FusedCrossEntropy(benchmark::State& state) {
  const int64_t T = state.range(0), E = 576, V = 49152;
  CrossEntropyOptions options;
  options.rows_per_block = state.range(1);
  std::mt19937 rng(7);
  const auto h = RandomVec(rng, T * E), w = RandomVec(rng, V * E, 0.05f);
  std::vector<int32_t> labels(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t)
    labels[static_cast<size_t>(t)] = static_cast<int32_t>((t * 7919) % V);
  std::vector<float> dh(h.size());
  ThreadPool pool(2);
  for (auto _ : state) {
    auto r =
        FusedCrossEntropy(&pool, h.data(), w.data(), labels.data(), T, E, V, dh.data(), options);
    benchmark::DoNotOptimize(r);
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_FusedCrossEntropy)
    ->Args({256, 1024})
    ->Args({1024, 1024})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace muninn
