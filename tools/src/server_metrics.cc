#include "server_metrics.h"

#include <cstdio>

namespace muninn::tools::server {
namespace {

// Label values are route names and reasons we choose ourselves, but escape anyway so the page
// stays parseable whatever a future route is called.
std::string EscapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string Num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

}  // namespace

void Metrics::RecordRequest(const std::string& route, int status, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{route, status}];
  Histogram& h = latency_[route];
  size_t b = 0;
  while (b < kBuckets.size() && seconds > kBuckets[b]) ++b;
  if (b < kBuckets.size()) ++h.counts[b];
  ++h.count;
  h.sum += seconds;
}

void Metrics::RecordGeneration(int64_t prompt_tokens, int64_t completion_tokens,
                               double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  prompt_tokens_ += prompt_tokens;
  completion_tokens_ += completion_tokens;
  generation_seconds_ += seconds;
  if (seconds > 0.0) last_tokens_per_second_ = static_cast<double>(completion_tokens) / seconds;
}

void Metrics::ConnectionOpened() {
  std::lock_guard<std::mutex> lock(mu_);
  ++active_connections_;
  ++connections_total_;
}

void Metrics::ConnectionClosed() {
  std::lock_guard<std::mutex> lock(mu_);
  --active_connections_;
}

void Metrics::RecordRejectedConnection(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  ++rejected_[reason];
}

int64_t Metrics::requests_total() const {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t n = 0;
  for (const auto& [key, count] : requests_) n += count;
  return n;
}

int64_t Metrics::active_connections() const {
  std::lock_guard<std::mutex> lock(mu_);
  return active_connections_;
}

std::string Metrics::Render(const EngineStats& stats) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  auto head = [&](const char* name, const char* type, const char* help) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
  };
  head("muninn_http_requests_total", "counter", "HTTP requests answered, by route and status.");
  for (const auto& [key, count] : requests_) {
    out += "muninn_http_requests_total{route=\"" + EscapeLabel(key.first) + "\",code=\"" +
           std::to_string(key.second) + "\"} " + std::to_string(count) + "\n";
  }
  head("muninn_http_request_duration_seconds", "histogram",
       "Time from a complete request to the end of its response, by route.");
  for (const auto& [route, h] : latency_) {
    const std::string label = "route=\"" + EscapeLabel(route) + "\"";
    int64_t cumulative = 0;
    for (size_t b = 0; b < kBuckets.size(); ++b) {
      cumulative += h.counts[b];
      out += "muninn_http_request_duration_seconds_bucket{" + label + ",le=\"" + Num(kBuckets[b]) +
             "\"} " + std::to_string(cumulative) + "\n";
    }
    out += "muninn_http_request_duration_seconds_bucket{" + label + ",le=\"+Inf\"} " +
           std::to_string(h.count) + "\n";
    out += "muninn_http_request_duration_seconds_sum{" + label + "} " + Num(h.sum) + "\n";
    out += "muninn_http_request_duration_seconds_count{" + label + "} " +
           std::to_string(h.count) + "\n";
  }
  head("muninn_http_connections_active", "gauge", "Open client connections.");
  out += "muninn_http_connections_active " + std::to_string(active_connections_) + "\n";
  head("muninn_http_connections_total", "counter", "Client connections accepted.");
  out += "muninn_http_connections_total " + std::to_string(connections_total_) + "\n";
  head("muninn_http_connections_rejected_total", "counter",
       "Connections cut for a limit (timeout, oversized header or body, malformed request).");
  for (const auto& [reason, count] : rejected_) {
    out += "muninn_http_connections_rejected_total{reason=\"" + EscapeLabel(reason) + "\"} " +
           std::to_string(count) + "\n";
  }
  head("muninn_prompt_tokens_total", "counter", "Prompt tokens processed for generation.");
  out += "muninn_prompt_tokens_total " + std::to_string(prompt_tokens_) + "\n";
  head("muninn_completion_tokens_total", "counter", "Tokens generated.");
  out += "muninn_completion_tokens_total " + std::to_string(completion_tokens_) + "\n";
  head("muninn_generation_seconds_total", "counter",
       "Seconds spent in generation requests (prompt and decode).");
  out += "muninn_generation_seconds_total " + Num(generation_seconds_) + "\n";
  head("muninn_generation_tokens_per_second", "gauge",
       "Completion tokens per second of the most recent generation request.");
  out += "muninn_generation_tokens_per_second " + Num(last_tokens_per_second_) + "\n";
  head("muninn_model_queue_waiting", "gauge", "Requests waiting for the model.");
  out += "muninn_model_queue_waiting " + std::to_string(stats.queue_waiting) + "\n";
  head("muninn_model_queue_running", "gauge", "Requests running on the model (0 or 1).");
  out += "muninn_model_queue_running " + std::to_string(stats.queue_running) + "\n";
  head("muninn_bank_chunks", "gauge", "Chunks in the memory bank.");
  out += "muninn_bank_chunks " + std::to_string(stats.bank_chunks) + "\n";
  head("muninn_bank_documents", "gauge", "Documents in the memory bank.");
  out += "muninn_bank_documents " + std::to_string(stats.bank_documents) + "\n";
  head("muninn_bank_tokens", "gauge", "Tokens stored in the memory bank.");
  out += "muninn_bank_tokens " + std::to_string(stats.bank_tokens) + "\n";
  head("muninn_bank_bytes", "gauge", "Bytes stored in the memory bank.");
  out += "muninn_bank_bytes " + std::to_string(stats.bank_bytes) + "\n";
  return out;
}

}  // namespace muninn::tools::server
