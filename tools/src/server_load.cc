// The load client is another Boost adapter: error_code overloads only.
#include "server_load.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace muninn::tools::server {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

Status LoadOptions::Validate() const {
  beast::error_code ec;
  const auto address = net::ip::make_address(host, ec);
  if (ec || !address.is_loopback()) {
    return InvalidArgumentError("the load client only talks to a loopback address (127.0.0.1 or "
                                "::1), not '" + host + "'");
  }
  if (connections < 1 || connections > 4096) {
    return InvalidArgumentError("connections must be in [1, 4096]");
  }
  if (duration.count() <= 0 && max_requests <= 0) {
    return InvalidArgumentError("give a duration or a request count, or the load never stops");
  }
  if (requests.empty()) return InvalidArgumentError("no requests to send");
  for (const auto& r : requests) {
    if (r.weight < 1) return InvalidArgumentError("request weights must be >= 1");
  }
  return Status::Ok();
}

std::string LoadReport::ToString() const {
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "%lld requests in %.2f s: %.1f req/s; latency p50 %.2f ms, p90 %.2f ms, "
                "p99 %.2f ms, max %.2f ms; %lld failed",
                static_cast<long long>(requests), seconds, requests_per_second, p50_ms, p90_ms,
                p99_ms, max_ms, static_cast<long long>(failures));
  return buf;
}

StatusOr<LoadReport> RunLoad(const LoadOptions& o) {
  RETURN_IF_ERROR(o.Validate());
  beast::error_code ec;
  const tcp::endpoint endpoint(net::ip::make_address(o.host, ec), o.port);
  // The weighted schedule: request i of a connection is schedule[i % size].
  std::vector<const LoadRequest*> schedule;
  for (const auto& r : o.requests) {
    for (int w = 0; w < r.weight; ++w) schedule.push_back(&r);
  }
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const auto deadline = o.duration.count() > 0 ? start + o.duration : Clock::time_point::max();
  std::atomic<int64_t> issued{0};
  std::atomic<int64_t> failures{0};
  std::atomic<int> connected{0};
  std::mutex mu;
  std::vector<double> latencies_ms;
  std::vector<std::string> samples;
  auto fail = [&](std::string why) {
    ++failures;
    std::lock_guard<std::mutex> lock(mu);
    if (samples.size() < 5) samples.push_back(std::move(why));
  };

  std::vector<std::thread> threads;
  for (int c = 0; c < o.connections; ++c) {
    threads.emplace_back([&, c] {
      net::io_context ioc;
      tcp::socket socket(ioc);
      beast::flat_buffer buffer;
      std::vector<double> mine;
      bool open = false;
      for (size_t i = static_cast<size_t>(c);; ++i) {
        if (Clock::now() >= deadline) break;
        if (o.max_requests > 0 && issued.fetch_add(1) >= o.max_requests) break;
        if (!open) {
          beast::error_code cec;
          socket = tcp::socket(ioc);
          socket.connect(endpoint, cec);
          if (cec) {
            fail("connect: " + cec.message());
            continue;
          }
          open = true;
          ++connected;
        }
        const LoadRequest& lr = *schedule[i % schedule.size()];
        http::request<http::string_body> req{http::string_to_verb(lr.method), lr.target, 11};
        req.set(http::field::host, o.host);
        if (!o.api_key.empty()) req.set(http::field::authorization, "Bearer " + o.api_key);
        if (!lr.body.empty()) {
          req.set(http::field::content_type, "application/json");
          req.body() = lr.body;
        }
        req.keep_alive(true);
        req.prepare_payload();
        const auto t0 = Clock::now();
        beast::error_code rec;
        http::write(socket, req, rec);
        http::response<http::string_body> res;
        if (!rec) http::read(socket, buffer, res, rec);
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        if (o.max_requests <= 0) ++issued;
        if (rec) {
          fail(lr.target + ": " + rec.message());
          open = false;
          continue;
        }
        mine.push_back(ms);
        const int status = res.result_int();
        if (std::find(o.ok_statuses.begin(), o.ok_statuses.end(), status) ==
            o.ok_statuses.end()) {
          fail(lr.target + ": HTTP " + std::to_string(status) + " " + res.body().substr(0, 200));
        }
        if (!res.keep_alive()) open = false;
      }
      beast::error_code ignored;
      socket.shutdown(tcp::socket::shutdown_both, ignored);
      std::lock_guard<std::mutex> lock(mu);
      latencies_ms.insert(latencies_ms.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  if (connected.load() == 0) {
    return IoError("could not connect to " + o.host + ":" + std::to_string(o.port) + ": " +
                   (samples.empty() ? "" : samples.front()));
  }
  LoadReport r;
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.requests = static_cast<int64_t>(latencies_ms.size());
  r.failures = failures.load();
  r.failure_samples = std::move(samples);
  r.requests_per_second = r.seconds > 0 ? static_cast<double>(r.requests) / r.seconds : 0.0;
  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto pct = [&](double p) {
    if (latencies_ms.empty()) return 0.0;
    const size_t i = std::min(latencies_ms.size() - 1,
                              static_cast<size_t>(p * static_cast<double>(latencies_ms.size())));
    return latencies_ms[i];
  };
  r.p50_ms = pct(0.50);
  r.p90_ms = pct(0.90);
  r.p99_ms = pct(0.99);
  r.max_ms = latencies_ms.empty() ? 0.0 : latencies_ms.back();
  return r;
}

}  // namespace muninn::tools::server
