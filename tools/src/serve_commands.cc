// `muninn serve --bank DIR [-m MODEL] [--host 127.0.0.1] [--port 8080] [--api-key-file F]
// [--threads N] ...`: the HTTP retrieval-augmented QA server (docs/SERVER.md).
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "command_registry.h"
#include "runtime.h"
#include "server_handlers.h"
#include "server_http.h"
#include "server_load.h"
#include "server_metrics.h"
#include "server_runtime_engine.h"

namespace muninn::tools {
namespace {

struct ServeFlags {
  RuntimeFlags rt;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key_file;
  int max_queue = 8;
  int http_workers = 0;  // 0: max_queue + 8
  int io_threads = 2;
  int64_t max_body_bytes = 8 << 20;
  int64_t max_header_bytes = 16 << 10;
  int64_t read_timeout_ms = 30'000;
  int64_t write_timeout_ms = 30'000;
  int max_connections = 512;
  int64_t max_tokens = 2048;
  double shutdown_timeout_s = 30.0;
  std::string log_level = "info";
};

// One key per line; blank lines and lines starting with '#' are skipped.
StatusOr<std::vector<std::string>> ReadApiKeys(const std::string& path, Logger* log) {
  std::ifstream in(path);
  if (!in) return NotFoundError("cannot read the API key file '" + path + "'");
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & S_IROTH) != 0) {
    MUNINN_LOG(log, kWarning) << "the API key file '" << path
                              << "' is readable by every user; chmod 600 it";
  }
  std::vector<std::string> keys;
  std::string line;
  while (std::getline(in, line)) {
    const size_t b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos || line[b] == '#') continue;
    const size_t e = line.find_last_not_of(" \t\r");
    keys.push_back(line.substr(b, e - b + 1));
  }
  if (keys.empty()) return InvalidArgumentError("the API key file '" + path + "' holds no key");
  return keys;
}

int Fail(const Status& s) {
  std::fprintf(stderr, "muninn serve: %s\n", s.ToString().c_str());
  return s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kNotFound ? 2 : 1;
}

int RunServe(ServeFlags f) {
  if (f.rt.bank.empty()) return Fail(InvalidArgumentError("serve needs --bank DIR"));
  LogLevel level = LogLevel::kInfo;
  if (!ParseLogLevel(f.log_level, &level)) {
    return Fail(InvalidArgumentError("--log-level must be debug, info, warning, error or off"));
  }
  StderrLogger logger(level);
  server::HandlerOptions ho;
  if (!f.api_key_file.empty()) {
    auto keys = ReadApiKeys(f.api_key_file, &logger);
    if (!keys.ok()) return Fail(keys.status());
    ho.api_keys = std::move(*keys);
  }
  ho.limits.max_tokens = f.max_tokens;
  ho.limits.default_max_tokens = std::min<int64_t>(ho.limits.default_max_tokens, f.max_tokens);
  if (auto s = ho.limits.Validate(); !s.ok()) return Fail(s);
  if (f.host != "127.0.0.1" && f.host != "::1" && ho.api_keys.empty()) {
    MUNINN_LOG(&logger, kWarning) << "listening on " << f.host
                                  << " without --api-key-file: anyone who can reach it can use "
                                     "the model and read and delete the bank";
  }

  // Signals are taken by sigwait on this thread only: block them before any thread starts so
  // every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  MUNINN_LOG(&logger, kInfo) << "loading the model and opening the bank " << f.rt.bank;
  auto rt = Runtime::Open(f.rt);
  if (!rt.ok()) return Fail(rt.status());
  server::RuntimeEngineOptions eo;
  eo.bank_dir = f.rt.bank;
  eo.max_waiting = f.max_queue;
  auto engine = server::RuntimeEngine::Create(std::move(*rt), eo);
  if (!engine.ok()) return Fail(engine.status());

  server::Metrics metrics;
  server::Handler handler(ho, &metrics);
  server::HttpServerOptions so;
  so.host = f.host;
  so.port = static_cast<uint16_t>(f.port);
  so.io_threads = f.io_threads;
  so.workers = f.http_workers > 0 ? f.http_workers : f.max_queue + 8;
  so.max_body_bytes = static_cast<size_t>(f.max_body_bytes);
  so.max_header_bytes = static_cast<size_t>(f.max_header_bytes);
  so.read_timeout = std::chrono::milliseconds(f.read_timeout_ms);
  so.write_timeout = std::chrono::milliseconds(f.write_timeout_ms);
  so.max_connections = f.max_connections;
  so.logger = &logger;
  so.drain_timeout = std::chrono::milliseconds(static_cast<int64_t>(f.shutdown_timeout_s * 1000.0));
  server::RuntimeEngine* engine_ptr = engine->get();
  so.on_drain_deadline = [engine_ptr] { engine_ptr->RequestStop(); };
  auto http = server::HttpServer::Start(so, &handler, engine->get(), &metrics);
  if (!http.ok()) return Fail(http.status());
  MUNINN_LOG(&logger, kInfo) << "serving " << (*engine)->model_id() << " on http://" << f.host
                             << ":" << (*http)->port() << " (Ctrl-C or SIGTERM to stop)";

  int sig = 0;
  sigwait(&signals, &sig);
  MUNINN_LOG(&logger, kInfo) << (sig == SIGTERM ? "SIGTERM" : "SIGINT")
                             << ": finishing requests in flight";
  (*http)->Shutdown();
  if (auto s = (*engine)->Close(); !s.ok()) return Fail(s.WithContext("closing the bank"));
  MUNINN_LOG(&logger, kInfo) << "bank closed; " << metrics.requests_total()
                             << " requests served";
  return 0;
}

// ---- loadtest ------------------------------------------------------------------------------
struct LoadFlags {
  std::string host = "127.0.0.1";
  int port = 8080;
  int connections = 64;
  double duration_s = 10.0;
  int64_t requests = 0;
  std::string mix = "health,models,documents,embeddings";
  std::string api_key_file;
  int pid = 0;
  bool json = false;
};

// VmRSS of process `pid` in KiB, or -1.
int64_t RssKiB(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoll(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

int RunLoadTest(const LoadFlags& f) {
  server::LoadOptions o;
  o.host = f.host;
  o.port = static_cast<uint16_t>(f.port);
  o.connections = f.connections;
  o.duration = std::chrono::milliseconds(static_cast<int64_t>(f.duration_s * 1000));
  o.max_requests = f.requests;
  o.requests.clear();
  std::stringstream mix(f.mix);
  for (std::string kind; std::getline(mix, kind, ',');) {
    server::LoadRequest r;
    if (kind == "health") {
      r.target = "/health";
    } else if (kind == "models") {
      r.target = "/v1/models";
    } else if (kind == "documents") {
      r.target = "/v1/documents";
    } else if (kind == "metrics") {
      r.target = "/metrics";
    } else if (kind == "embeddings") {
      r.method = "POST";
      r.target = "/v1/embeddings";
      r.body = R"({"input":["a lighthouse on the harbour wall"]})";
    } else if (kind == "chat") {
      r.method = "POST";
      r.target = "/v1/chat/completions";
      r.body = R"({"messages":[{"role":"user","content":"Say hi."}],"max_tokens":4})";
    } else if (kind == "ask") {
      r.method = "POST";
      r.target = "/v1/ask";
      r.body = R"({"question":"What is this about?","max_tokens":4})";
    } else {
      return Fail(InvalidArgumentError("unknown --mix entry '" + kind +
                                       "' (health, models, documents, metrics, embeddings, chat, "
                                       "ask)"));
    }
    o.requests.push_back(std::move(r));
  }
  if (!f.api_key_file.empty()) {
    NullLogger quiet;
    auto keys = ReadApiKeys(f.api_key_file, &quiet);
    if (!keys.ok()) return Fail(keys.status());
    o.api_key = keys->front();
  }
  const int64_t rss_before = f.pid > 0 ? RssKiB(f.pid) : -1;
  auto report = server::RunLoad(o);
  if (!report.ok()) return Fail(report.status());
  const int64_t rss_after = f.pid > 0 ? RssKiB(f.pid) : -1;
  if (f.json) {
    nlohmann::json j = {{"requests", report->requests},
                        {"failures", report->failures},
                        {"seconds", report->seconds},
                        {"requests_per_second", report->requests_per_second},
                        {"p50_ms", report->p50_ms},
                        {"p90_ms", report->p90_ms},
                        {"p99_ms", report->p99_ms},
                        {"max_ms", report->max_ms},
                        {"connections", o.connections},
                        {"mix", f.mix},
                        {"server_rss_kib_before", rss_before},
                        {"server_rss_kib_after", rss_after}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%d connections, mix %s: %s\n", o.connections, f.mix.c_str(),
                report->ToString().c_str());
    if (rss_before >= 0) {
      std::printf("server RSS %lld KiB before, %lld KiB after\n",
                  static_cast<long long>(rss_before), static_cast<long long>(rss_after));
    }
  }
  for (const auto& s : report->failure_samples) std::fprintf(stderr, "  failed: %s\n", s.c_str());
  return report->failures == 0 ? 0 : 1;
}

}  // namespace

void RegisterServeCommands(CLI::App& app, CommandContext& ctx) {
  auto f = std::make_shared<ServeFlags>();
  auto* cmd = app.add_subcommand(
      "serve", "HTTP server: OpenAI-compatible chat/completions/embeddings plus document "
               "ingest, ask and summarize over a memory bank (docs/SERVER.md)");
  AddRuntimeFlags(cmd, &f->rt);
  AddDeviceFlag(cmd, &f->rt);
  cmd->add_option("--host", f->host, "Address to listen on (default 127.0.0.1: this machine only)");
  cmd->add_option("--port", f->port, "Port (0 = any free port)")->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key-file", f->api_key_file,
                  "File with one API key per line; then every endpoint but /health needs "
                  "'Authorization: Bearer KEY'");
  cmd->add_option("--max-queue", f->max_queue,
                  "Requests that may wait for the model before new ones get 503")
      ->check(CLI::Range(0, 4096));
  cmd->add_option("--http-workers", f->http_workers, "Handler threads (default: max-queue + 8)")
      ->check(CLI::Range(0, 4096));
  cmd->add_option("--io-threads", f->io_threads, "Socket I/O threads")->check(CLI::Range(1, 64));
  cmd->add_option("--max-body-bytes", f->max_body_bytes, "Largest request body (413 above)")
      ->check(CLI::Range(int64_t{1024}, int64_t{1} << 32));
  cmd->add_option("--max-header-bytes", f->max_header_bytes, "Largest request header (431 above)")
      ->check(CLI::Range(int64_t{1024}, int64_t{1} << 24));
  cmd->add_option("--read-timeout-ms", f->read_timeout_ms,
                  "A request (headers and body) must arrive within this time")
      ->check(CLI::Range(int64_t{1}, int64_t{3'600'000}));
  cmd->add_option("--write-timeout-ms", f->write_timeout_ms, "Each write must finish within this")
      ->check(CLI::Range(int64_t{1}, int64_t{3'600'000}));
  cmd->add_option("--max-connections", f->max_connections, "Open connections (503 above)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--max-tokens", f->max_tokens, "Largest max_tokens a request may ask for")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--shutdown-timeout", f->shutdown_timeout_s,
                  "Seconds SIGTERM/SIGINT waits for requests in flight; then running ingests "
                  "stop between two appends (kept as partial documents) and connections close")
      ->check(CLI::Range(0.0, 86400.0));
  cmd->add_option("--log-level", f->log_level, "debug, info, warning, error or off");
  cmd->callback([&ctx, f] { ctx.exit_code = RunServe(*f); });

  auto lf = std::make_shared<LoadFlags>();
  auto* load = app.add_subcommand(
      "loadtest", "Load a running `muninn serve` on this machine (loopback only) and report "
                  "throughput and latency percentiles; exit 1 on any failed request");
  load->add_option("--host", lf->host, "Loopback address of the server");
  load->add_option("--port", lf->port, "Server port")->check(CLI::Range(1, 65535));
  load->add_option("-c,--connections", lf->connections, "Concurrent keep-alive connections")
      ->check(CLI::Range(1, 4096));
  load->add_option("-d,--duration", lf->duration_s, "Seconds to run")->check(CLI::Range(0.0, 3600.0));
  load->add_option("-n,--requests", lf->requests, "Stop after this many requests (0 = duration only)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  load->add_option("--mix", lf->mix,
                   "Comma-separated request kinds sent round-robin: health, models, documents, "
                   "metrics, embeddings, chat, ask");
  load->add_option("--api-key-file", lf->api_key_file, "Use the first key of this file");
  load->add_option("--pid", lf->pid, "Server process id: report its RSS before and after");
  load->add_flag("--json", lf->json, "Print JSON");
  load->callback([&ctx, lf] { ctx.exit_code = RunLoadTest(*lf); });
}

}  // namespace muninn::tools
