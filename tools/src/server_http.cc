// The Boost.Beast adapter: every Boost call uses its error_code overload, and the one place that
// runs foreign code on a worker (Process) catches whatever escapes, so no exception leaves here.
#include "server_http.h"

#include <atomic>
#include <condition_variable>
#include <exception>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace muninn::tools::server {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

Status HttpServerOptions::Validate() const {
  if (io_threads < 1 || io_threads > 256) return InvalidArgumentError("io_threads must be in [1, 256]");
  if (workers < 1 || workers > 4096) return InvalidArgumentError("workers must be in [1, 4096]");
  if (max_header_bytes < 1024) return InvalidArgumentError("max_header_bytes must be >= 1024");
  if (max_body_bytes < 1024) return InvalidArgumentError("max_body_bytes must be >= 1024");
  if (read_timeout.count() <= 0 || write_timeout.count() <= 0 || drain_timeout.count() < 0) {
    return InvalidArgumentError("timeouts must be positive");
  }
  if (max_connections < 1) return InvalidArgumentError("max_connections must be >= 1");
  return Status::Ok();
}

class Session;

class HttpServer::Impl {
 public:
  Impl(const HttpServerOptions& options, const Handler* handler, Engine* engine, Metrics* metrics)
      : options_(options),
        handler_(handler),
        engine_(engine),
        metrics_(metrics),
        ioc_(options.io_threads),
        work_(net::make_work_guard(ioc_)),
        acceptor_(net::make_strand(ioc_)),
        workers_(static_cast<size_t>(options.workers)) {}

  Status Listen();
  void Run();
  void Shutdown();
  uint16_t port() const { return port_; }

  // ---- used by sessions ----
  const HttpServerOptions& options() const { return options_; }
  const Handler& handler() const { return *handler_; }
  Engine& engine() { return *engine_; }
  Metrics* metrics() { return metrics_; }
  net::thread_pool& workers() { return workers_; }
  bool draining() const { return draining_.load(std::memory_order_acquire); }
  void Register(const std::shared_ptr<Session>& s);
  void Unregister(Session* s);
  void Log(LogLevel level, const std::string& message) {
    if (options_.logger != nullptr && options_.logger->Enabled(level)) {
      options_.logger->Log(level, message);
    }
  }

 private:
  void DoAccept();
  void OnAccept(beast::error_code ec, tcp::socket socket);
  void RejectBusy(tcp::socket socket);

  HttpServerOptions options_;
  const Handler* handler_;
  Engine* engine_;
  Metrics* metrics_;
  net::io_context ioc_;
  net::executor_work_guard<net::io_context::executor_type> work_;
  tcp::acceptor acceptor_;
  net::thread_pool workers_;
  std::vector<std::thread> io_threads_;
  uint16_t port_ = 0;
  std::atomic<bool> draining_{false};
  std::once_flag shutdown_once_;

  std::mutex sessions_mu_;
  std::condition_variable sessions_cv_;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions_;
};

// One connection. Lives as long as an operation on it is pending (shared_from_this in every
// handler). All socket work runs on the stream's strand; Process runs on a worker.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, HttpServer::Impl* server)
      : stream_(std::move(socket)), server_(server) {
    beast::error_code ec;
    const auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
    if (server_->metrics()) server_->metrics()->ConnectionOpened();
  }
  ~Session() {
    if (server_->metrics()) server_->metrics()->ConnectionClosed();
    server_->Unregister(this);
  }

  void Start() {
    net::dispatch(stream_.get_executor(),
                  beast::bind_front_handler(&Session::DoRead, shared_from_this()));
  }

  // Called at shutdown: a connection waiting for a request is closed; one with a request in
  // progress finishes it first, unless `force`.
  void Stop(bool force) {
    net::post(stream_.get_executor(), [self = shared_from_this(), force] {
      beast::error_code ec;
      if (force) {
        self->stream_.socket().close(ec);
      } else if (self->reading_) {
        self->stream_.socket().cancel(ec);
      }
    });
  }

 private:
  void DoRead();
  void OnHeader(beast::error_code ec, size_t bytes);
  void OnRead(beast::error_code ec, size_t bytes);
  void ReadFailed(beast::error_code ec);
  void Process(std::shared_ptr<Request> request);
  void RunStream(const Response& response);
  // Writes `response` (whole body) on the strand, then continues or closes.
  void WriteResponse(Response response);
  void Finish(bool keep_alive, const std::string& route, int status);
  void Close();
  // Writes `buffers` on the strand from a worker thread and waits for the result.
  template <typename Buffers>
  beast::error_code WriteFromWorker(const Buffers& buffers);

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  HttpServer::Impl* server_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<http::response<http::string_body>> out_;
  std::string remote_;
  bool reading_ = false;
  bool keep_alive_ = false;
  unsigned http_version_ = 11;  // of the request being answered (10 or 11)
  SteadyClock::time_point request_start_;
  // For a streamed body: the header and its serializer live here while chunks go out.
  std::optional<http::response<http::empty_body>> stream_header_;
};

void Session::DoRead() {
  if (server_->draining()) {
    Close();
    return;
  }
  parser_.emplace();
  parser_->header_limit(static_cast<uint32_t>(server_->options().max_header_bytes));
  parser_->body_limit(server_->options().max_body_bytes);
  // One deadline for the whole request, headers and body: dribbling bytes does not extend it.
  stream_.expires_after(server_->options().read_timeout);
  reading_ = true;
  http::async_read_header(stream_, buffer_, *parser_,
                          beast::bind_front_handler(&Session::OnHeader, shared_from_this()));
}

void Session::OnHeader(beast::error_code ec, size_t) {
  if (ec) return ReadFailed(ec);
  const auto& req = parser_->get();
  auto expect = req.find(http::field::expect);
  if (expect != req.end() && beast::iequals(expect->value(), "100-continue")) {
    // curl and others wait for this before sending a large body.
    auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
    http::async_write(stream_, *cont,
                      [self = shared_from_this(), cont](beast::error_code wec, size_t) {
                        if (wec) return self->ReadFailed(wec);
                        http::async_read(self->stream_, self->buffer_, *self->parser_,
                                         beast::bind_front_handler(&Session::OnRead, self));
                      });
    return;
  }
  http::async_read(stream_, buffer_, *parser_,
                   beast::bind_front_handler(&Session::OnRead, shared_from_this()));
}

void Session::ReadFailed(beast::error_code ec) {
  reading_ = false;
  Metrics* metrics = server_->metrics();
  if (ec == http::error::end_of_stream || ec == net::error::eof ||
      ec == net::error::operation_aborted || ec == net::error::connection_reset) {
    Close();
    return;
  }
  if (ec == beast::error::timeout) {
    // Beast closed the socket already; nothing can be sent.
    if (metrics) metrics->RecordRejectedConnection("timeout");
    server_->Log(LogLevel::kDebug, "read timeout from " + remote_);
    return;
  }
  int status = 0;
  std::string reason;
  std::string message;
  if (ec == http::error::header_limit) {
    status = 431;
    reason = "header_too_large";
    message = "request headers exceed " + std::to_string(server_->options().max_header_bytes) +
              " bytes";
  } else if (ec == http::error::body_limit) {
    status = 413;
    reason = "body_too_large";
    message = "request body exceeds " + std::to_string(server_->options().max_body_bytes) +
              " bytes";
  } else if (ec.category() == http::make_error_code(http::error::bad_target).category()) {
    status = 400;
    reason = "bad_request";
    message = "malformed HTTP request: " + ec.message();
  } else {
    Close();
    return;
  }
  if (metrics) metrics->RecordRejectedConnection(reason);
  request_start_ = SteadyClock::now();
  keep_alive_ = false;
  Response r = ErrorResponse(status, message);
  r.route = "other";
  WriteResponse(std::move(r));
}

void Session::OnRead(beast::error_code ec, size_t) {
  if (ec) return ReadFailed(ec);
  reading_ = false;
  request_start_ = SteadyClock::now();
  auto req = parser_->release();
  auto request = std::make_shared<Request>();
  request->method = std::string(req.method_string());
  request->target = std::string(req.target());
  for (const auto& field : req) {
    std::string name(field.name_string());
    for (char& c : name) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    request->headers[std::move(name)] = std::string(field.value());
  }
  request->body = std::move(req.body());
  request->remote = remote_;
  keep_alive_ = req.keep_alive();
  http_version_ = req.version();
  // No deadline while the handler runs (it may wait for the model); writes set their own.
  stream_.expires_never();
  net::post(server_->workers(),
            [self = shared_from_this(), request] { self->Process(std::move(request)); });
}

void Session::Process(std::shared_ptr<Request> request) {
  Response response;
  try {
    response = server_->handler().Handle(*request, server_->engine());
  } catch (const std::exception& e) {
    response = ErrorResponse(500, std::string("internal error: ") + e.what());
  } catch (...) {
    response = ErrorResponse(500, "internal error");
  }
  if (response.stream) {
    RunStream(response);
    return;
  }
  net::post(stream_.get_executor(), [self = shared_from_this(), r = std::move(response)]() mutable {
    self->WriteResponse(std::move(r));
  });
}

template <typename Buffers>
beast::error_code Session::WriteFromWorker(const Buffers& buffers) {
  std::promise<beast::error_code> done;
  auto result = done.get_future();
  net::post(stream_.get_executor(), [this, &buffers, &done] {
    stream_.expires_after(server_->options().write_timeout);
    net::async_write(stream_, buffers, [&done](beast::error_code ec, size_t) {
      done.set_value(ec);
    });
  });
  return result.get();
}

// A StreamWriter over the session: the first Write sends the response header (chunked), every
// Write one chunk.
class ChunkedWriter final : public StreamWriter {
 public:
  using HeaderWriter = std::function<beast::error_code()>;
  using ChunkWriter = std::function<beast::error_code(std::string_view)>;
  ChunkedWriter(HeaderWriter header, ChunkWriter chunk)
      : header_(std::move(header)), chunk_(std::move(chunk)) {}
  bool Write(std::string_view data) override {
    if (failed_) return false;
    if (!started_) {
      started_ = true;
      if (header_()) failed_ = true;
    }
    if (!failed_ && !data.empty() && chunk_(data)) failed_ = true;
    return !failed_;
  }
  bool started() const { return started_; }
  bool failed() const { return failed_; }

 private:
  HeaderWriter header_;
  ChunkWriter chunk_;
  bool started_ = false;
  bool failed_ = false;
};

void Session::RunStream(const Response& response) {
  auto self = shared_from_this();
  // HTTP/1.0 has no chunked encoding: such a client gets the stream as a close-delimited body
  // (no Content-Length, the end of the body is the end of the connection).
  const bool chunked = http_version_ >= 11;
  const bool keep_alive = chunked && keep_alive_ && !server_->draining();
  std::optional<http::response_serializer<http::empty_body>> serializer;
  ChunkedWriter writer(
      [&]() -> beast::error_code {
        stream_header_.emplace(static_cast<http::status>(response.status), chunked ? 11 : 10);
        stream_header_->set(http::field::server, "muninn");
        stream_header_->set(http::field::content_type, response.content_type);
        for (const auto& [name, value] : response.headers) stream_header_->set(name, value);
        stream_header_->keep_alive(keep_alive);
        stream_header_->chunked(chunked);
        serializer.emplace(*stream_header_);
        std::promise<beast::error_code> done;
        auto result = done.get_future();
        net::post(stream_.get_executor(), [this, &serializer, &done] {
          stream_.expires_after(server_->options().write_timeout);
          http::async_write_header(stream_, *serializer, [&done](beast::error_code ec, size_t) {
            done.set_value(ec);
          });
        });
        return result.get();
      },
      [&](std::string_view data) -> beast::error_code {
        if (!chunked) return WriteFromWorker(net::const_buffer(data.data(), data.size()));
        const auto chunk = http::make_chunk(net::const_buffer(data.data(), data.size()));
        return WriteFromWorker(chunk);
      });
  Status status;
  try {
    status = response.stream(writer);
  } catch (const std::exception& e) {
    status = InternalError(std::string("internal error: ") + e.what());
  } catch (...) {
    status = InternalError("internal error");
  }
  if (!writer.started()) {
    // Nothing went out: answer like any other request (an error, or an empty stream).
    Response plain;
    if (!status.ok()) {
      plain = ErrorResponseOf(status);
      if (plain.status == 503) {
        plain.headers.emplace_back("Retry-After",
                                   std::to_string(server_->handler().options().retry_after_seconds));
      }
    } else {
      plain.status = response.status;
      plain.content_type = response.content_type;
    }
    plain.route = response.route;
    net::post(stream_.get_executor(), [self, r = std::move(plain)]() mutable {
      self->WriteResponse(std::move(r));
    });
    return;
  }
  bool ok = !writer.failed();
  if (ok && chunked) ok = !WriteFromWorker(http::make_chunk_last());
  net::post(stream_.get_executor(), [self, ok, keep_alive, route = response.route,
                                     code = response.status] {
    self->stream_header_.reset();
    self->Finish(ok && keep_alive, route, code);
  });
}

void Session::WriteResponse(Response response) {
  auto res = std::make_shared<http::response<http::string_body>>(
      static_cast<http::status>(response.status), 11);
  res->set(http::field::server, "muninn");
  res->set(http::field::content_type, response.content_type);
  for (const auto& [name, value] : response.headers) res->set(name, value);
  const bool keep_alive = keep_alive_ && !server_->draining();
  res->keep_alive(keep_alive);
  res->body() = std::move(response.body);
  res->prepare_payload();
  out_ = res;
  stream_.expires_after(server_->options().write_timeout);
  http::async_write(stream_, *res,
                    [self = shared_from_this(), keep_alive, route = std::move(response.route),
                     code = response.status](beast::error_code ec, size_t) {
                      self->out_.reset();
                      self->Finish(!ec && keep_alive, route, code);
                    });
}

void Session::Finish(bool keep_alive, const std::string& route, int status) {
  if (server_->metrics()) {
    server_->metrics()->RecordRequest(
        route, status, std::chrono::duration<double>(SteadyClock::now() - request_start_).count());
  }
  if (keep_alive) {
    DoRead();
  } else {
    Close();
  }
}

void Session::Close() {
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  stream_.socket().close(ec);
}

// ---- server ----------------------------------------------------------------------------------

void HttpServer::Impl::Register(const std::shared_ptr<Session>& s) {
  std::lock_guard<std::mutex> lock(sessions_mu_);
  sessions_[s.get()] = s;
}

void HttpServer::Impl::Unregister(Session* s) {
  std::lock_guard<std::mutex> lock(sessions_mu_);
  sessions_.erase(s);
  sessions_cv_.notify_all();
}

Status HttpServer::Impl::Listen() {
  beast::error_code ec;
  const auto address = net::ip::make_address(options_.host, ec);
  if (ec) {
    return InvalidArgumentError("'" + options_.host + "' is not an IP address: " + ec.message());
  }
  const tcp::endpoint endpoint(address, options_.port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return IoError("cannot listen on " + options_.host + ":" + std::to_string(options_.port) +
                   ": " + ec.message());
  }
  port_ = acceptor_.local_endpoint(ec).port();
  return Status::Ok();
}

void HttpServer::Impl::Run() {
  DoAccept();
  for (int i = 0; i < options_.io_threads; ++i) {
    io_threads_.emplace_back([this] { ioc_.run(); });
  }
}

void HttpServer::Impl::DoAccept() {
  acceptor_.async_accept(net::make_strand(ioc_),
                         beast::bind_front_handler(&Impl::OnAccept, this));
}

void HttpServer::Impl::OnAccept(beast::error_code ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
  if (!ec) {
    size_t live = 0;
    {
      std::lock_guard<std::mutex> lock(sessions_mu_);
      live = sessions_.size();
    }
    if (draining()) {
      beast::error_code ignored;
      socket.close(ignored);
    } else if (live >= static_cast<size_t>(options_.max_connections)) {
      RejectBusy(std::move(socket));
    } else {
      auto session = std::make_shared<Session>(std::move(socket), this);
      Register(session);
      session->Start();
    }
  } else {
    Log(LogLevel::kWarning, "accept failed: " + ec.message());
  }
  DoAccept();
}

void HttpServer::Impl::RejectBusy(tcp::socket socket) {
  if (metrics_) metrics_->RecordRejectedConnection("too_many_connections");
  const Response r = ErrorResponse(503, "too many open connections; retry later");
  auto text = std::make_shared<std::string>(
      "HTTP/1.1 503 Service Unavailable\r\nServer: muninn\r\nContent-Type: application/json\r\n"
      "Retry-After: " +
      std::to_string(handler_->options().retry_after_seconds) +
      "\r\nConnection: close\r\nContent-Length: " + std::to_string(r.body.size()) + "\r\n\r\n" +
      r.body);
  auto sock = std::make_shared<tcp::socket>(std::move(socket));
  net::async_write(*sock, net::buffer(*text), [sock, text](beast::error_code, size_t) {
    beast::error_code ignored;
    sock->shutdown(tcp::socket::shutdown_send, ignored);
    sock->close(ignored);
  });
}

void HttpServer::Impl::Shutdown() {
  std::call_once(shutdown_once_, [this] {
    draining_.store(true, std::memory_order_release);
    {
      std::promise<void> closed;
      net::post(acceptor_.get_executor(), [this, &closed] {
        beast::error_code ec;
        acceptor_.close(ec);
        closed.set_value();
      });
      closed.get_future().wait();
    }
    const auto deadline = SteadyClock::now() + options_.drain_timeout;
    bool forced = false;
    std::unique_lock<std::mutex> lock(sessions_mu_);
    while (!sessions_.empty()) {
      // Idle connections go now; busy ones close after their response (they see draining_).
      // After the drain deadline every socket is closed: pending writes fail, and the handlers
      // still running end as soon as their generation does.
      const bool force = !forced && SteadyClock::now() >= deadline;
      if (force) {
        forced = true;
        Log(LogLevel::kWarning, "drain timeout: stopping work in progress and closing " +
                                    std::to_string(sessions_.size()) +
                                    " connections with requests still running");
        if (options_.on_drain_deadline) {
          lock.unlock();
          options_.on_drain_deadline();
          lock.lock();
        }
      }
      std::vector<std::shared_ptr<Session>> live;
      for (auto& [ptr, weak] : sessions_) {
        if (auto s = weak.lock()) live.push_back(std::move(s));
      }
      lock.unlock();
      for (auto& s : live) s->Stop(force);
      live.clear();  // drop our references before waiting
      lock.lock();
      sessions_cv_.wait_for(lock, std::chrono::milliseconds(100),
                            [this] { return sessions_.empty(); });
    }
    lock.unlock();
    // No session is left, so no handler is running: the threads can go.
    work_.reset();
    ioc_.stop();
    for (auto& t : io_threads_) t.join();
    io_threads_.clear();
    workers_.join();
  });
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Shutdown(); }

StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options,
                                                        const Handler* handler, Engine* engine,
                                                        Metrics* metrics) {
  RETURN_IF_ERROR(options.Validate());
  MUNINN_CHECK(handler != nullptr && engine != nullptr);
  auto impl = std::make_unique<Impl>(options, handler, engine, metrics);
  RETURN_IF_ERROR(impl->Listen());
  impl->Run();
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

uint16_t HttpServer::port() const { return impl_->port(); }

void HttpServer::Shutdown() {
  if (impl_) impl_->Shutdown();
}

}  // namespace muninn::tools::server
