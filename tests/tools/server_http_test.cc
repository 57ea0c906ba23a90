// The server over real sockets on 127.0.0.1: keep-alive, SSE streaming, limits (body, header,
// slow clients, connections, queue), graceful shutdown; and, when the default model is present,
// ingest → ask → chat → stream end to end on it.
#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "tests/tools/server_fake_engine.h"
#include "tools/src/runtime.h"
#include "tools/src/server_handlers.h"
#include "tools/src/server_http.h"
#include "tools/src/server_load.h"
#include "tools/src/server_runtime_engine.h"

namespace muninn::tools::server {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using nlohmann::json;
using testing::FakeEngine;
using namespace std::chrono_literals;

// A blocking HTTP/1.1 client on one connection (Beast), for tests only. Sockets time out so a
// server bug fails the test instead of hanging it.
class Client {
 public:
  explicit Client(uint16_t port) : socket_(ioc_) {
    socket_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    timeval tv{10, 0};
    setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  http::response<http::string_body> Send(http::verb method, const std::string& target,
                                         const std::string& body = "",
                                         const std::string& auth = "") {
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "127.0.0.1");
    if (!auth.empty()) req.set(http::field::authorization, "Bearer " + auth);
    if (!body.empty()) {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
    }
    req.keep_alive(true);
    req.prepare_payload();
    http::write(socket_, req);
    return Read();
  }
  http::response<http::string_body> Read() {
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    http::read(socket_, buffer_, parser);
    return parser.release();
  }
  void WriteRaw(const std::string& bytes) { net::write(socket_, net::buffer(bytes)); }
  // True when the server closed the connection (EOF/reset) within `within`.
  bool ClosedByServer(std::chrono::milliseconds within) {
    const auto end = std::chrono::steady_clock::now() + within;
    char c;
    while (std::chrono::steady_clock::now() < end) {
      beast::error_code ec;
      socket_.read_some(net::buffer(&c, 1), ec);
      if (ec) return true;
    }
    return false;
  }
  tcp::socket& socket() { return socket_; }

 private:
  net::io_context ioc_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
};

HttpServerOptions TestOptions() {
  HttpServerOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.io_threads = 2;
  o.workers = 8;
  o.read_timeout = 500ms;
  o.write_timeout = 2000ms;
  o.max_body_bytes = 64 * 1024;
  o.max_header_bytes = 4096;
  o.drain_timeout = 10s;
  return o;
}

class HttpTest : public ::testing::Test {
 protected:
  void StartServer(HttpServerOptions o = TestOptions(), HandlerOptions ho = {}) {
    handler_ = std::make_unique<Handler>(ho, &metrics_);
    auto s = HttpServer::Start(o, handler_.get(), &engine_, &metrics_);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
  }
  void TearDown() override {
    engine_.OpenGate();
    if (server_) server_->Shutdown();
  }
  FakeEngine engine_{/*max_waiting=*/1};
  Metrics metrics_;
  std::unique_ptr<Handler> handler_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpTest, KeepAliveRoundTrips) {
  StartServer();
  Client c(server_->port());
  auto r = c.Send(http::verb::get, "/health");
  EXPECT_EQ(r.result_int(), 200);
  EXPECT_EQ(json::parse(r.body())["status"], "ok");
  EXPECT_TRUE(r.keep_alive());
  r = c.Send(http::verb::post, "/v1/chat/completions",
             R"({"messages":[{"role":"user","content":"ping"}]})");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(json::parse(r.body())["choices"][0]["message"]["content"], "echo: ping");
  r = c.Send(http::verb::get, "/nowhere");
  EXPECT_EQ(r.result_int(), 404);
  r = c.Send(http::verb::delete_, "/v1/chat/completions");
  EXPECT_EQ(r.result_int(), 405);
  EXPECT_EQ(r[http::field::allow], "POST");
  r = c.Send(http::verb::get, "/metrics");
  EXPECT_NE(r.body().find("muninn_http_requests_total{route=\"/health\",code=\"200\"} 1"),
            std::string::npos)
      << r.body();
}

TEST_F(HttpTest, StreamsServerSentEvents) {
  StartServer();
  Client c(server_->port());
  auto r = c.Send(http::verb::post, "/v1/chat/completions",
                  R"({"messages":[{"role":"user","content":"a b c"}],"stream":true})");
  ASSERT_EQ(r.result_int(), 200);
  EXPECT_EQ(r[http::field::content_type], "text/event-stream");
  EXPECT_TRUE(r.chunked());
  EXPECT_NE(r.body().find("data: [DONE]\n\n"), std::string::npos);
  EXPECT_NE(r.body().find("\"content\":\" c\""), std::string::npos) << r.body();
  // The connection stays usable after a stream.
  EXPECT_EQ(c.Send(http::verb::get, "/health").result_int(), 200);
}

TEST_F(HttpTest, OversizedBodyIs413) {
  StartServer();
  Client c(server_->port());
  c.WriteRaw("POST /v1/documents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: 10000000\r\n\r\n");
  auto r = c.Read();
  EXPECT_EQ(r.result_int(), 413);
  EXPECT_TRUE(json::parse(r.body()).contains("error"));
  EXPECT_TRUE(c.ClosedByServer(2s));
  // Chunked bodies are limited too.
  Client c2(server_->port());
  c2.WriteRaw("POST /v1/documents HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  const std::string piece(16 * 1024, 'a');
  char size_line[32];
  std::snprintf(size_line, sizeof(size_line), "%zx\r\n", piece.size());
  beast::error_code ec;
  for (int i = 0; i < 8 && !ec; ++i) {
    net::write(c2.socket(), net::buffer(std::string(size_line) + piece + "\r\n"), ec);
  }
  auto r2 = c2.Read();
  EXPECT_EQ(r2.result_int(), 413);
}

TEST_F(HttpTest, OversizedHeaderIs431AndGarbageIs400) {
  StartServer();
  Client c(server_->port());
  c.WriteRaw("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(8000, 'h') + "\r\n\r\n");
  EXPECT_EQ(c.Read().result_int(), 431);
  Client g(server_->port());
  g.WriteRaw("THIS IS NOT HTTP\r\n\r\n");
  EXPECT_EQ(g.Read().result_int(), 400);
  EXPECT_TRUE(g.ClosedByServer(2s));
}

TEST_F(HttpTest, SlowlorisIsCutOff) {
  StartServer();  // read_timeout 500 ms for the whole request
  Client c(server_->port());
  const std::string req = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + std::string(200, 's') +
                          "\r\n\r\n";
  const auto start = std::chrono::steady_clock::now();
  size_t sent = 0;
  beast::error_code ec;
  for (; sent < req.size() && !ec; ++sent) {
    net::write(c.socket(), net::buffer(&req[sent], 1), ec);
    std::this_thread::sleep_for(20ms);
    if (std::chrono::steady_clock::now() - start > 5s) break;
  }
  // The header would take ~5 s at this pace; the server must have hung up long before.
  EXPECT_LT(sent, req.size());
  EXPECT_TRUE(c.ClosedByServer(2s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
  // An idle connection is closed by the same deadline.
  Client idle(server_->port());
  EXPECT_TRUE(idle.ClosedByServer(3s));
  // And the server still serves others.
  Client ok(server_->port());
  EXPECT_EQ(ok.Send(http::verb::get, "/health").result_int(), 200);
}

TEST_F(HttpTest, FullQueueIs503WithRetryAfter) {
  StartServer();
  engine_.CloseGate();
  auto running = std::async(std::launch::async, [&] {
    Client c(server_->port());
    return c.Send(http::verb::post, "/v1/completions", R"({"prompt":"first"})").result_int();
  });
  while (engine_.entered() < 1) std::this_thread::sleep_for(1ms);
  auto waiting = std::async(std::launch::async, [&] {
    Client c(server_->port());
    return c.Send(http::verb::post, "/v1/completions", R"({"prompt":"second"})").result_int();
  });
  while (engine_.queue().waiting() < 1) std::this_thread::sleep_for(1ms);
  Client c(server_->port());
  auto r = c.Send(http::verb::post, "/v1/chat/completions",
                  R"({"messages":[{"role":"user","content":"x"}],"stream":true})");
  EXPECT_EQ(r.result_int(), 503);
  EXPECT_EQ(r[http::field::retry_after], "2");
  EXPECT_EQ(json::parse(r.body())["error"]["type"], "overloaded_error");
  // Cheap requests are not stuck behind the model.
  EXPECT_EQ(c.Send(http::verb::get, "/v1/documents").result_int(), 200);
  engine_.OpenGate();
  EXPECT_EQ(running.get(), 200);
  EXPECT_EQ(waiting.get(), 200);
}

TEST_F(HttpTest, AuthOverHttp) {
  HandlerOptions ho;
  ho.api_keys = {"s3cret"};
  StartServer(TestOptions(), ho);
  Client c(server_->port());
  EXPECT_EQ(c.Send(http::verb::get, "/health").result_int(), 200);
  auto r = c.Send(http::verb::get, "/v1/models");
  EXPECT_EQ(r.result_int(), 401);
  EXPECT_EQ(r[http::field::www_authenticate], "Bearer");
  EXPECT_EQ(c.Send(http::verb::get, "/v1/models", "", "s3cret").result_int(), 200);
}

TEST_F(HttpTest, ConnectionLimit) {
  HttpServerOptions o = TestOptions();
  o.max_connections = 2;
  o.read_timeout = 5s;
  StartServer(o);
  Client a(server_->port());
  Client b(server_->port());
  EXPECT_EQ(a.Send(http::verb::get, "/health").result_int(), 200);
  EXPECT_EQ(b.Send(http::verb::get, "/health").result_int(), 200);
  Client c(server_->port());
  c.WriteRaw("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  auto r = c.Read();
  EXPECT_EQ(r.result_int(), 503);
}

TEST_F(HttpTest, GracefulShutdownFinishesInFlight) {
  HttpServerOptions o = TestOptions();
  o.read_timeout = 5s;
  StartServer(o);
  Client idle(server_->port());
  EXPECT_EQ(idle.Send(http::verb::get, "/health").result_int(), 200);
  engine_.CloseGate();
  auto in_flight = std::async(std::launch::async, [&] {
    Client c(server_->port());
    auto r = c.Send(http::verb::post, "/v1/chat/completions",
                    R"({"messages":[{"role":"user","content":"last words"}],"stream":true})");
    return std::make_pair(r.result_int(), r.body());
  });
  while (engine_.entered() < 1) std::this_thread::sleep_for(1ms);
  auto stopped = std::async(std::launch::async, [&] { server_->Shutdown(); });
  // The idle keep-alive connection is closed promptly; the in-flight request is not.
  EXPECT_TRUE(idle.ClosedByServer(2s));
  EXPECT_EQ(stopped.wait_for(200ms), std::future_status::timeout);
  engine_.OpenGate();
  auto [status, body] = in_flight.get();
  EXPECT_EQ(status, 200);
  EXPECT_NE(body.find("data: [DONE]"), std::string::npos);
  stopped.get();
  // Nothing listens any more.
  net::io_context ioc;
  tcp::socket s(ioc);
  beast::error_code ec;
  s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), server_->port()), ec);
  EXPECT_TRUE(ec);
}

TEST_F(HttpTest, ShutdownPastTheDrainDeadlineStopsWorkInProgress) {
  HttpServerOptions o = TestOptions();
  o.read_timeout = 5s;
  o.drain_timeout = 300ms;
  o.on_drain_deadline = [this] { engine_.RequestStop(); };
  StartServer(o);
  engine_.CloseGate();  // the request below would otherwise hold the model forever
  auto in_flight = std::async(std::launch::async, [&] {
    Client c(server_->port());
    beast::error_code ec;
    http::request<http::string_body> req{http::verb::post, "/v1/completions", 11};
    req.set(http::field::host, "x");
    req.set(http::field::content_type, "application/json");
    req.body() = R"({"prompt":"never finishes"})";
    req.prepare_payload();
    http::write(c.socket(), req, ec);
    return c.ClosedByServer(10s);
  });
  while (engine_.entered() < 1) std::this_thread::sleep_for(1ms);
  const auto start = std::chrono::steady_clock::now();
  auto stopped = std::async(std::launch::async, [&] { server_->Shutdown(); });
  ASSERT_EQ(stopped.wait_for(5s), std::future_status::ready) << "shutdown waited past its deadline";
  EXPECT_GE(std::chrono::steady_clock::now() - start, 250ms);
  EXPECT_TRUE(engine_.stop_requested());
  EXPECT_TRUE(in_flight.get());
}

TEST_F(HttpTest, Http10StreamIsCloseDelimitedNotChunked) {
  StartServer();
  Client c(server_->port());
  const std::string body =
      R"({"messages":[{"role":"user","content":"one two three"}],"stream":true})";
  c.WriteRaw("POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  std::string raw;
  char buf[4096];
  for (;;) {
    beast::error_code ec;
    const size_t n = c.socket().read_some(net::buffer(buf), ec);
    raw.append(buf, n);
    if (ec) break;  // the server closes: that ends the body
  }
  const size_t head_end = raw.find("\r\n\r\n");
  ASSERT_NE(head_end, std::string::npos) << raw;
  std::string head = raw.substr(0, head_end);
  for (char& ch : head) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  EXPECT_EQ(head.rfind("http/1.0 200", 0), 0u) << head;
  EXPECT_EQ(head.find("transfer-encoding"), std::string::npos) << head;
  EXPECT_EQ(head.find("content-length"), std::string::npos) << head;
  const std::string payload = raw.substr(head_end + 4);
  EXPECT_EQ(payload.rfind("data: ", 0), 0u) << payload;  // no chunk-size line before it
  EXPECT_NE(payload.find("three"), std::string::npos);
  EXPECT_NE(payload.find("data: [DONE]\n\n"), std::string::npos) << payload;
  // An HTTP/1.1 client still gets chunked encoding.
  Client c11(server_->port());
  auto r = c11.Send(http::verb::post, "/v1/chat/completions", body);
  EXPECT_TRUE(r.chunked());
}

TEST_F(HttpTest, ConcurrentClients) {
  HttpServerOptions o = TestOptions();
  o.workers = 16;
  StartServer(o);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 12; ++t) {
    threads.emplace_back([&, t] {
      Client c(server_->port());
      for (int i = 0; i < 15; ++i) {
        const auto r =
            i % 3 == 0 ? c.Send(http::verb::get, "/v1/documents")
            : i % 3 == 1
                ? c.Send(http::verb::post, "/v1/documents",
                         json{{"text", "doc " + std::to_string(t) + " " + std::to_string(i)}}.dump())
                : c.Send(http::verb::post, "/v1/embeddings", R"({"input":["a","bb"]})");
        // The fake's queue admits one waiter: 503 is the only acceptable refusal.
        if (r.result_int() != 200 && r.result_int() != 503) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(HttpTest, LoadOf64ConnectionsHasNoFailures) {
  HttpServerOptions o = TestOptions();
  o.workers = 8;
  StartServer(o);
  LoadOptions lo;
  lo.port = server_->port();
  lo.connections = 64;
  lo.duration = 0ms;
  lo.max_requests = 1280;
  lo.requests = {{"GET", "/health", "", 2},
                 {"GET", "/v1/models", "", 1},
                 {"GET", "/v1/documents", "", 1},
                 {"GET", "/metrics", "", 1}};
  auto report = RunLoad(lo);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->failures, 0) << report->ToString();
  EXPECT_EQ(report->requests, 1280);
  std::printf("[load] %s\n", report->ToString().c_str());
  LoadOptions remote = lo;
  remote.host = "10.0.0.1";
  EXPECT_FALSE(RunLoad(remote).ok());  // loopback only
}

// ---- the real default model ---------------------------------------------------------------

TEST(ServerRealModelTest, IngestAskChatStreamOverHttp) {
  const std::string root = MUNINN_SOURCE_DIR;
  const std::string model_path = root + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(model_path)) GTEST_SKIP() << "no " << model_path;
  const std::string bank =
      (std::filesystem::temp_directory_path() /
       ("muninn_server_test_" + std::to_string(::getpid())))
          .string();
  std::filesystem::remove_all(bank);
  RuntimeFlags flags;
  flags.config = root + "/configs/smollm2-135m.json";
  flags.bank = bank;
  flags.threads = 2;
  auto rt = Runtime::Open(flags);
  ASSERT_TRUE(rt.ok()) << rt.status();
  RuntimeEngineOptions eo;
  eo.bank_dir = bank;
  auto engine = RuntimeEngine::Create(std::move(*rt), eo);
  ASSERT_TRUE(engine.ok()) << engine.status();
  Metrics metrics;
  Handler handler(HandlerOptions{}, &metrics);
  HttpServerOptions o = TestOptions();
  o.read_timeout = 30s;
  o.write_timeout = 30s;
  auto server = HttpServer::Start(o, &handler, engine->get(), &metrics);
  ASSERT_TRUE(server.ok()) << server.status();
  Client c((*server)->port());

  std::string text;
  for (int i = 0; i < 6; ++i) {
    text += "The harbour town of Vellmar keeps its lighthouse painted green. Fishermen sell "
            "herring on the quay every morning, and the bell rings at noon. ";
  }
  text += "The secret password of the Vellmar lighthouse keeper is ORANGE-FALCON-42. ";
  auto r = c.Send(http::verb::post, "/v1/documents",
                  json{{"name", "vellmar.txt"}, {"text", text}}.dump());
  ASSERT_EQ(r.result_int(), 200) << r.body();
  const json doc = json::parse(r.body());
  EXPECT_GE(doc["chunks"].get<int>(), 1);
  const uint64_t id = doc["id"];

  r = c.Send(http::verb::get, "/v1/documents");
  ASSERT_EQ(r.result_int(), 200);
  EXPECT_EQ(json::parse(r.body())["data"][0]["name"], "vellmar.txt");

  r = c.Send(http::verb::post, "/v1/ask",
             R"({"question":"What is the secret password of the lighthouse keeper?",
                 "max_tokens":12,"include_text":true})");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  json ask = json::parse(r.body());
  EXPECT_FALSE(ask["answer"].get<std::string>().empty());
  ASSERT_FALSE(ask["chunks"].empty());
  EXPECT_EQ(ask["chunks"][0]["document"], "vellmar.txt");
  EXPECT_EQ(ask["chunks"][0]["document_id"], id);

  r = c.Send(http::verb::post, "/v1/chat/completions",
             R"({"messages":[{"role":"user","content":"Say hello."}],"max_tokens":6})");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  json chat = json::parse(r.body());
  EXPECT_GT(chat["usage"]["completion_tokens"].get<int>(), 0);
  const std::string reply = chat["choices"][0]["message"]["content"];

  r = c.Send(http::verb::post, "/v1/chat/completions",
             R"({"messages":[{"role":"user","content":"Say hello."}],"max_tokens":6,
                 "stream":true})");
  ASSERT_EQ(r.result_int(), 200);
  std::string streamed;
  size_t pos = 0;
  while ((pos = r.body().find("data: ", pos)) != std::string::npos) {
    const size_t end = r.body().find("\n\n", pos);
    const std::string data = r.body().substr(pos + 6, end - pos - 6);
    pos = end;
    if (data == "[DONE]") break;
    const json e = json::parse(data);
    const json& delta = e["choices"][0]["delta"];
    if (delta.contains("content")) streamed += delta["content"].get<std::string>();
  }
  // Greedy decoding: the stream says exactly what the plain response said.
  EXPECT_EQ(streamed, reply);

  r = c.Send(http::verb::post, "/v1/embeddings", R"({"input":["lighthouse","harbour"]})");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(json::parse(r.body())["data"][0]["embedding"].size(), 384u);

  r = c.Send(http::verb::delete_, "/v1/documents/" + std::to_string(id));
  EXPECT_EQ(r.result_int(), 200);
  (*server)->Shutdown();
  ASSERT_TRUE((*engine)->Close().ok());
  engine->reset();
  std::filesystem::remove_all(bank);
}

}  // namespace
}  // namespace muninn::tools::server
