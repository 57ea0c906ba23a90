#include "muninn/core/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MUNINN_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define MUNINN_CPU_RELAX() asm volatile("yield" ::: "memory")
#else
#define MUNINN_CPU_RELAX() ((void)0)
#endif

namespace muninn {
namespace {

thread_local bool tls_in_pool_task = false;

// Spinning with pause only, before SpinUntil starts yielding.
constexpr int64_t kPauseOnlyMicros = 5;

// Polls `done()` for about `micros` microseconds; true as soon as it holds. The clock is read
// once per 64 polls so the loop stays cheap. After the first few microseconds every round also
// yields the CPU: when the machine is oversubscribed the thread being waited for may be queued
// behind this one, and pure spinning would burn the time slice it needs.
template <typename Pred>
bool SpinUntil(Pred done, int64_t micros) {
  const auto start = std::chrono::steady_clock::now();
  const auto yield_after = start + std::chrono::microseconds(kPauseOnlyMicros);
  const auto deadline = start + std::chrono::microseconds(micros);
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      MUNINN_CPU_RELAX();
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return done();
    if (now >= yield_after) std::this_thread::yield();
  }
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  num_threads_ = num_threads;
  workers_.reserve(static_cast<size_t>(num_threads_ - 1));
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::WorkerLoop(int index) {
  uint32_t seen = 0;
  for (;;) {
    const auto changed = [&] { return generation_.load(std::memory_order_acquire) != seen; };
    if (!SpinUntil(changed, kSpinMicros)) {
      // Announce the sleep before the last check, so a caller that bumps the generation after
      // that check sees the count and notifies (both sides are seq_cst).
      worker_sleepers_.fetch_add(1);
      while (generation_.load() == seen) generation_.wait(seen);
      worker_sleepers_.fetch_sub(1);
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    const std::function<void(int, int)>* job = job_;
    tls_in_pool_task = true;
    (*job)(index, num_threads_);
    tls_in_pool_task = false;
    if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load() != 0) pending_.notify_one();
  }
}

void ThreadPool::RunOnAll(const std::function<void(int, int)>& fn) {
  if (num_threads_ == 1 || tls_in_pool_task) {
    // Nested call from a task (or no workers): run every share inline.
    for (int i = 0; i < num_threads_; ++i) fn(i, num_threads_);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mu_);
  job_ = &fn;
  pending_.store(num_threads_ - 1);
  generation_.fetch_add(1);  // seq_cst: publishes job_ and pending_
  if (worker_sleepers_.load() != 0) generation_.notify_all();
  tls_in_pool_task = true;
  fn(0, num_threads_);
  tls_in_pool_task = false;
  if (!SpinUntil([&] { return pending_.load(std::memory_order_acquire) == 0; }, kSpinMicros)) {
    caller_sleeping_.store(1);
    for (int32_t p = pending_.load(); p != 0; p = pending_.load()) pending_.wait(p);
    caller_sleeping_.store(0);
  }
  job_ = nullptr;
}

void ThreadPool::ParallelFor(int64_t n, int64_t min_chunk,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  min_chunk = std::max<int64_t>(1, min_chunk);
  const int64_t max_parts = (n + min_chunk - 1) / min_chunk;
  const int parts = static_cast<int>(std::min<int64_t>(num_threads_, max_parts));
  if (parts <= 1 || tls_in_pool_task) {
    fn(0, n);
    return;
  }
  RunOnAll([&](int i, int) {
    if (i >= parts) return;
    const int64_t begin = n * i / parts;
    const int64_t end = n * (i + 1) / parts;
    if (begin < end) fn(begin, end);
  });
}

void ParallelFor(ThreadPool* pool, int64_t n, int64_t min_chunk,
                 const std::function<void(int64_t, int64_t)>& fn) {
  if (pool == nullptr) {
    if (n > 0) fn(0, n);
    return;
  }
  pool->ParallelFor(n, min_chunk, fn);
}

}  // namespace muninn
