// ThreadPool: a fixed set of worker threads for data-parallel loops. There is no global pool;
// components receive one through their options.
//
// Dispatch is built for many small jobs in a row (a decode step runs a few hundred ops of tens of
// microseconds each): after a job, workers spin on an atomic generation counter for kSpinMicros
// before they sleep in the kernel (futex via std::atomic::wait), and the caller spins on the
// completion counter the same way. A wake-up through a condition variable costs tens of
// microseconds on a VM (an IPI to an idle vCPU), as long as a small op. The spin is short because
// on an oversubscribed machine a spinning thread takes time from the thread it waits for.
//
// Thread-safe: ParallelFor may be called from several threads at once (calls are serialised);
// calling it from inside a task runs the nested loop inline on the calling thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace muninn {

class ThreadPool {
 public:
  // `num_threads` counts the calling thread: 1 means no workers (everything inline).
  // 0 picks std::thread::hardware_concurrency().
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Splits [0, n) into contiguous ranges of at least `min_chunk` items and runs
  // fn(begin, end) on them, using the workers and the calling thread. Returns when all ranges
  // are done. fn must not throw.
  void ParallelFor(int64_t n, int64_t min_chunk,
                   const std::function<void(int64_t begin, int64_t end)>& fn);

  // Runs fn(thread_index, num_threads) once on each of num_threads() threads.
  void RunOnAll(const std::function<void(int thread_index, int num_threads)>& fn);

 private:
  // How long an idle worker (or a caller waiting for the workers) polls before it sleeps.
  static constexpr int64_t kSpinMicros = 50;

  void WorkerLoop(int index);

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // serialises ParallelFor/RunOnAll calls

  // Job hand-off: job_ is written before generation_ is bumped (release) and read after a worker
  // sees the new generation (acquire). Sleepers wait on the atomics themselves (futex); the
  // *_sleepers_ counts let the other side skip the notify system call when nobody sleeps.
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint32_t> generation_{0};
  std::atomic<int32_t> pending_{0};  // workers still running the current job
  std::atomic<int32_t> worker_sleepers_{0};
  std::atomic<int32_t> caller_sleeping_{0};
  std::atomic<bool> stop_{false};
};

// Runs fn on `pool` when it is non-null and has workers, inline otherwise.
void ParallelFor(ThreadPool* pool, int64_t n, int64_t min_chunk,
                 const std::function<void(int64_t begin, int64_t end)>& fn);

}  // namespace muninn
