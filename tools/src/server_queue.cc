#include "server_queue.h"

#include <string>

namespace muninn::tools::server {

ModelQueue::Lease& ModelQueue::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    queue_ = other.queue_;
    other.queue_ = nullptr;
  }
  return *this;
}

void ModelQueue::Lease::Release() {
  if (queue_ != nullptr) {
    queue_->ReleaseOne();
    queue_ = nullptr;
  }
}

StatusOr<ModelQueue::Lease> ModelQueue::Acquire() {
  std::unique_lock<std::mutex> lock(mu_);
  // Tickets handed out but not yet served, the holder included.
  const uint64_t ahead = next_ticket_ - serving_;
  const uint64_t waiting_now = held_ ? ahead - 1 : ahead;
  if (held_ && waiting_now >= static_cast<uint64_t>(max_waiting_)) {
    return UnavailableError("the model is busy and " + std::to_string(waiting_now) +
                            " requests already wait for it; retry later");
  }
  const uint64_t ticket = next_ticket_++;
  cv_.wait(lock, [&] { return !held_ && serving_ == ticket; });
  held_ = true;
  return Lease(this);
}

void ModelQueue::ReleaseOne() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    held_ = false;
    ++serving_;
  }
  cv_.notify_all();
}

int64_t ModelQueue::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t ahead = next_ticket_ - serving_;
  return static_cast<int64_t>(held_ ? ahead - 1 : ahead);
}

bool ModelQueue::busy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return held_;
}

}  // namespace muninn::tools::server
