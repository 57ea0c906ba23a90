// Private to tools/: a small HTTP load generator for `muninn loadtest` (and the server tests):
// C concurrent keep-alive connections on 127.0.0.1, each sending requests back to back for a
// fixed duration or count, then a report of throughput, latency percentiles and failures.
// Loopback only by design: it refuses any other address.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "muninn/core/status.h"

namespace muninn::tools::server {

struct LoadRequest {
  std::string method = "GET";
  std::string target = "/health";
  std::string body;     // JSON, sent with Content-Type: application/json when not empty
  int weight = 1;       // relative frequency among the requests
};

struct LoadOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
  int connections = 64;
  std::chrono::milliseconds duration{10'000};  // stops after this...
  int64_t max_requests = 0;                    // ...or after this many requests (0 = no cap)
  std::vector<LoadRequest> requests = {LoadRequest{}};
  std::string api_key;  // sent as a Bearer token when set
  // Statuses that count as success; anything else (and any socket error) is a failure.
  std::vector<int> ok_statuses = {200};
  Status Validate() const;
};

struct LoadReport {
  int64_t requests = 0;
  int64_t failures = 0;
  std::vector<std::string> failure_samples;  // the first few, for the log
  double seconds = 0.0;
  double requests_per_second = 0.0;
  double p50_ms = 0.0, p90_ms = 0.0, p99_ms = 0.0, max_ms = 0.0;
  std::string ToString() const;
};

// Runs the load; returns the report (failures are counted, not returned as errors). IoError
// only when no connection could be opened at all.
StatusOr<LoadReport> RunLoad(const LoadOptions& options);

}  // namespace muninn::tools::server
