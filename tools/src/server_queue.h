// Private to tools/: the bounded first-come-first-served queue in front of the one model.
//
// Generation, ingest, summaries and embeddings all run on one model and one backend, which are
// not thread-safe, so they take turns: Acquire hands out leases in arrival order, at most one
// held at a time. At most `max_waiting` callers may wait behind the holder; one more is refused
// at once with Unavailable (the server answers 503 + Retry-After) instead of piling up threads
// and memory behind a slow model.
//
// Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "muninn/core/status.h"

namespace muninn::tools::server {

class ModelQueue {
 public:
  // Holds the model while alive; move-only. A default-constructed lease holds nothing.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept : queue_(other.queue_) { other.queue_ = nullptr; }
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { Release(); }
    void Release();
    bool held() const { return queue_ != nullptr; }

   private:
    friend class ModelQueue;
    explicit Lease(ModelQueue* queue) : queue_(queue) {}
    ModelQueue* queue_ = nullptr;
  };

  // `max_waiting` >= 0 callers may wait while one holds the model.
  explicit ModelQueue(int64_t max_waiting) : max_waiting_(max_waiting) {}
  ModelQueue(const ModelQueue&) = delete;
  ModelQueue& operator=(const ModelQueue&) = delete;

  // Waits for the model (first come, first served) and returns the lease; Unavailable at once
  // when max_waiting callers already wait.
  StatusOr<Lease> Acquire();

  int64_t waiting() const;
  bool busy() const;
  int64_t max_waiting() const { return max_waiting_; }

 private:
  void ReleaseOne();

  const int64_t max_waiting_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_ticket_ = 0;  // the ticket the next caller gets
  uint64_t serving_ = 0;      // the ticket allowed to hold the model
  bool held_ = false;
};

}  // namespace muninn::tools::server
