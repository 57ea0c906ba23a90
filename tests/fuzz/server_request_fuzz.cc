// libFuzzer target for the HTTP API's request parsing and validation: the first byte picks the
// route and method, the rest is the body (and, for some routes, the path suffix). Handler::Handle
// runs on a fake engine; it must answer every input without crashing, throwing or reading out of
// bounds, and every non-streamed answer must be JSON (or the Prometheus page).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/tools/server_fake_engine.h"
#include "tools/src/server_handlers.h"

namespace {

using muninn::tools::server::Handler;
using muninn::tools::server::HandlerOptions;
using muninn::tools::server::Request;
using muninn::tools::server::testing::FakeEngine;
using muninn::tools::server::testing::StringWriter;

constexpr const char* kRoutes[] = {
    "POST /v1/chat/completions", "POST /v1/completions", "POST /v1/embeddings",
    "POST /v1/documents",        "POST /v1/ask",         "POST /v1/summarize",
    "GET /v1/documents",         "DELETE /v1/documents/", "GET /v1/models/",
    "GET /health",               "GET /metrics",         "PUT /v1/ask",
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // One engine for the whole run (documents accumulate, as on a live server), but bounded.
  static FakeEngine* engine = new FakeEngine(/*max_waiting=*/1);
  static Handler* handler = new Handler(HandlerOptions{}, nullptr);
  static int calls = 0;
  if (++calls % 4096 == 0) {
    delete engine;
    engine = new FakeEngine(1);
  }
  const std::string route = kRoutes[data[0] % (sizeof(kRoutes) / sizeof(kRoutes[0]))];
  const std::string rest(reinterpret_cast<const char*>(data + 1), size - 1);
  Request r;
  r.method = route.substr(0, route.find(' '));
  r.target = route.substr(route.find(' ') + 1);
  if (r.target.back() == '/') {
    r.target += rest.substr(0, 32);  // fuzz the path id too
  } else {
    r.body = rest;
  }
  auto res = handler->Handle(r, *engine);
  if (res.stream) {
    StringWriter w;
    (void)res.stream(w);
    return 0;
  }
  if (res.status < 200 || res.status > 599) std::abort();
  if (r.target != "/metrics" && nlohmann::json::parse(res.body, nullptr, false).is_discarded()) {
    std::abort();
  }
  return 0;
}
