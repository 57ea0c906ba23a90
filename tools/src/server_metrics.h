// Private to tools/: the counters behind GET /metrics (Prometheus text exposition format 0.0.4).
//
// Requests are counted per route and status code, with a latency histogram per route; generation
// adds prompt/completion token totals and the seconds spent generating (tokens/s is the rate of
// one over the other; the last request's rate is a gauge too). Bank and queue gauges come from
// the Engine when the page is rendered.
//
// Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "server_engine.h"

namespace muninn::tools::server {

class Metrics {
 public:
  // Upper bounds (seconds) of the latency histogram buckets; +Inf is implied.
  static constexpr std::array<double, 14> kBuckets = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                      0.5,   1.0,   2.5,  5.0,   10.0, 30.0, 120.0};

  void RecordRequest(const std::string& route, int status, double seconds);
  void RecordGeneration(int64_t prompt_tokens, int64_t completion_tokens, double seconds);
  void ConnectionOpened();
  void ConnectionClosed();
  // Connections cut for a limit: "timeout", "header_too_large", "body_too_large", "bad_request",
  // "too_many_connections".
  void RecordRejectedConnection(const std::string& reason);

  int64_t requests_total() const;
  int64_t active_connections() const;

  // The whole exposition text.
  std::string Render(const EngineStats& stats) const;

 private:
  struct Histogram {
    std::array<int64_t, kBuckets.size()> counts{};  // per bucket, not cumulative
    int64_t count = 0;
    double sum = 0.0;
  };
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  std::map<std::string, Histogram> latency_;
  std::map<std::string, int64_t> rejected_;
  int64_t prompt_tokens_ = 0;
  int64_t completion_tokens_ = 0;
  double generation_seconds_ = 0.0;
  double last_tokens_per_second_ = 0.0;
  int64_t active_connections_ = 0;
  int64_t connections_total_ = 0;
};

}  // namespace muninn::tools::server
