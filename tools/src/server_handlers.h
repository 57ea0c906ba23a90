// Private to tools/: the HTTP API of `muninn serve` as a pure function of a request.
//
//   GET    /health                 liveness (no auth)
//   GET    /metrics                Prometheus text
//   GET    /v1/models, /v1/models/{id}
//   POST   /v1/chat/completions    OpenAI chat (stream: SSE)
//   POST   /v1/completions         OpenAI legacy completions (stream: SSE)
//   POST   /v1/embeddings          OpenAI embeddings (float or base64)
//   POST   /v1/documents           ingest one document, or {"documents": [...]}
//   GET    /v1/documents           list
//   DELETE /v1/documents/{id}
//   POST   /v1/ask                 answer from the bank + the chunks used (stream: SSE)
//   POST   /v1/summarize           summary of a text or of a stored document
// docs/SERVER.md describes every field. Unknown paths are 404, known paths with another method
// 405 (with Allow), bad fields 400, all errors in OpenAI's error shape. With API keys set, every
// path but /health needs "Authorization: Bearer KEY" (401).
//
// Thread-safe: Handle may run on many threads at once (the Engine serialises the model).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "server_engine.h"
#include "server_metrics.h"
#include "server_request.h"

namespace muninn::tools::server {

// Per-request limits on what a client may ask for (the byte limits on the request itself live
// in the HTTP layer).
struct RequestLimits {
  int64_t max_tokens = 2048;              // largest max_tokens a request may set
  int64_t default_max_tokens = 256;       // when a request sets none
  size_t max_messages = 256;              // chat messages per request
  size_t max_inputs = 128;                // embedding inputs per request
  size_t max_input_bytes = 64 * 1024;     // bytes per embedding input
  size_t max_documents = 16;              // documents per ingest request
  size_t max_stop = 4;                    // stop strings
  size_t max_stop_bytes = 64;
  size_t max_name_bytes = 512;            // document names
  int64_t max_top_k_chunks = 64;          // retrieval top-k a request may set
  size_t max_document_filter = 256;       // document ids in a retrieval filter
  int json_max_depth = 32;
  Status Validate() const;
};

struct HandlerOptions {
  // Accepted bearer keys; empty = no auth.
  std::vector<std::string> api_keys;
  RequestLimits limits;
  // Seconds a client is told to wait (Retry-After) when the model queue is full.
  int retry_after_seconds = 2;
  // Seconds since the Unix epoch ("created" fields); null = the system clock.
  std::function<int64_t()> now_seconds;
};

class Handler {
 public:
  // `metrics` may be null (tests); not owned.
  Handler(HandlerOptions options, Metrics* metrics);

  Response Handle(const Request& request, Engine& engine) const;

  const HandlerOptions& options() const { return options_; }

 private:
  bool Authorized(const Request& request) const;
  int64_t Now() const;
  std::string NextId(const char* prefix) const;

  Response Health(Engine& engine) const;
  Response MetricsPage(Engine& engine) const;
  Response Models(Engine& engine, std::string_view id) const;
  Response ChatCompletions(const Request& request, Engine& engine) const;
  Response Completions(const Request& request, Engine& engine) const;
  Response Embeddings(const Request& request, Engine& engine) const;
  Response IngestDocuments(const Request& request, Engine& engine) const;
  Response ListDocuments(Engine& engine) const;
  Response DeleteDocument(std::string_view id, Engine& engine) const;
  Response Ask(const Request& request, Engine& engine) const;
  Response Summarize(const Request& request, Engine& engine) const;

  HandlerOptions options_;
  Metrics* metrics_;
  mutable std::atomic<uint64_t> next_id_{1};
};

}  // namespace muninn::tools::server
