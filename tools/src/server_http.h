// Private to tools/: the socket side of `muninn serve` (Boost.Beast over Asio).
//
// I/O threads run every socket operation asynchronously; each connection is a Session that owns
// its tcp_stream and read buffer and runs on its own strand. A complete request is handed to a
// pool of worker threads, which call Handler::Handle (a pure function of the request) and either
// post the response back to the session or, for server-sent events, write the body chunk by
// chunk (each chunk waits for the previous one, so a slow reader slows only its own producer).
//
// Limits, all enforced here so that no client can hold a thread or memory it did not pay for:
//  - a request (headers and body) must arrive within read_timeout, counted from its first byte
//    being awaited, so a client that dribbles bytes (slowloris) is cut off; the same deadline
//    ends idle keep-alive connections;
//  - headers above max_header_bytes are 431, bodies above max_body_bytes 413 (checked against
//    Content-Length before the body is read, and while reading chunked bodies);
//  - every write must finish within write_timeout, or the connection is closed;
//  - at most max_connections connections; more are answered 503 and closed.
//
// Shutdown() stops accepting, closes connections that wait for a request and lets requests already
// received finish (their responses are sent with Connection: close). When drain_timeout passes
// first, it calls on_drain_deadline (so the engine stops running work at a safe point), closes
// every connection, and returns once the last handler has returned.
//
// Thread-safe: Shutdown may be called from any thread (not from a handler).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "muninn/core/logging.h"
#include "muninn/core/status.h"
#include "server_engine.h"
#include "server_handlers.h"
#include "server_metrics.h"

namespace muninn::tools::server {

struct HttpServerOptions {
  std::string host = "127.0.0.1";   // loopback unless asked otherwise
  uint16_t port = 8080;             // 0 = a free port (see HttpServer::port())
  int io_threads = 2;
  // Handler threads. Requests waiting for the model hold one each, so keep this above the model
  // queue's max_waiting + 1, or cheap requests (health, lists) wait behind generation.
  int workers = 16;
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 8 * 1024 * 1024;
  std::chrono::milliseconds read_timeout{30'000};
  std::chrono::milliseconds write_timeout{30'000};
  // Shutdown waits this long for requests in flight; then it calls on_drain_deadline (the engine
  // stops its work at the next safe point) and closes every connection.
  std::chrono::milliseconds drain_timeout{30'000};
  std::function<void()> on_drain_deadline;  // may be empty
  int max_connections = 512;
  Logger* logger = nullptr;  // null: no logging
  Status Validate() const;
};

class HttpServer {
 public:
  // Binds and starts serving. `handler`, `engine` and `metrics` are not owned and must outlive
  // the server. IoError when the address cannot be bound.
  static StatusOr<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options,
                                                     const Handler* handler, Engine* engine,
                                                     Metrics* metrics);
  // Shuts down (as Shutdown) if still running.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port (the chosen one when options.port was 0).
  uint16_t port() const;
  // Graceful stop; idempotent. Returns when all connections are closed and threads joined.
  void Shutdown();

  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace muninn::tools::server
