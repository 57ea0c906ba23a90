// ThreadPool: a fixed set of worker threads for data-parallel loops. There is no global pool;
// components receive one through their options.
//
// Thread-safe: ParallelFor may be called from several threads at once (calls are serialised);
// calling it from inside a task runs the nested loop inline on the calling thread.
#pragma once

#include <condition_variable>
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
  void WorkerLoop(int index);

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // serialises ParallelFor/RunOnAll calls

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int, int)>* job_ = nullptr;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

// Runs fn on `pool` when it is non-null and has workers, inline otherwise.
void ParallelFor(ThreadPool* pool, int64_t n, int64_t min_chunk,
                 const std::function<void(int64_t begin, int64_t end)>& fn);

}  // namespace muninn
