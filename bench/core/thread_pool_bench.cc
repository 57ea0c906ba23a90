// ThreadPool dispatch cost: one ParallelFor over the pool with (almost) no work per task, the
// fixed overhead every op pays per call. A decode step of a 30-layer model issues a few hundred
// of these, so microseconds here are milliseconds per token.
#include <benchmark/benchmark.h>

#include <atomic>

#include "muninn/core/thread_pool.h"

namespace muninn {
namespace {

void BM_ParallelForDispatch(benchmark::State& state) {
  ThreadPool pool(static_cast<int>(state.range(0)));
  std::atomic<int64_t> sink{0};
  for (auto _ : state) {
    pool.ParallelFor(pool.num_threads(), 1, [&](int64_t b, int64_t e) {
      sink.fetch_add(e - b, std::memory_order_relaxed);
    });
  }
  benchmark::DoNotOptimize(sink.load());
}
BENCHMARK(BM_ParallelForDispatch)->Arg(2)->ArgName("threads")->UseRealTime();

// Dispatches separated by ~20 us of work on the caller, as between the ops of a decode step.
void BM_ParallelForAfterWork(benchmark::State& state) {
  ThreadPool pool(static_cast<int>(state.range(0)));
  std::atomic<int64_t> sink{0};
  volatile double x = 1.0;
  for (auto _ : state) {
    for (int i = 0; i < 8000; ++i) x = x * 1.0000001;
    pool.ParallelFor(pool.num_threads(), 1, [&](int64_t b, int64_t e) {
      sink.fetch_add(e - b, std::memory_order_relaxed);
    });
  }
  benchmark::DoNotOptimize(sink.load());
}
BENCHMARK(BM_ParallelForAfterWork)->Arg(2)->ArgName("threads")->UseRealTime();

}  // namespace
}  // namespace muninn
