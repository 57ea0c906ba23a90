// The HTTP API as plain functions: Handler::Handle on a fake engine, no sockets.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/tools/server_fake_engine.h"
#include "tools/src/server_handlers.h"

namespace muninn::tools::server {
namespace {

using nlohmann::json;
using testing::FakeEngine;
using testing::StringWriter;

Request Make(std::string method, std::string target, std::string body = "") {
  Request r;
  r.method = std::move(method);
  r.target = std::move(target);
  r.body = std::move(body);
  return r;
}

HandlerOptions Fixed() {
  HandlerOptions o;
  o.now_seconds = [] { return int64_t{1700000000}; };
  return o;
}

// The "data: ..." payloads of an SSE body.
std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const size_t end = body.find("\n\n", pos);
    out.push_back(body.substr(pos + 6, end - pos - 6));
    pos = end;
  }
  return out;
}

class HandlerTest : public ::testing::Test {
 protected:
  Response Call(const Request& r) { return handler_.Handle(r, engine_); }
  json Body(const Response& r) { return json::parse(r.body); }
  FakeEngine engine_;
  Metrics metrics_;
  Handler handler_{Fixed(), &metrics_};
};

TEST_F(HandlerTest, HealthAndRouting) {
  Response r = Call(Make("GET", "/health"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(Body(r)["status"], "ok");
  EXPECT_EQ(r.route, "/health");

  r = Call(Make("GET", "/nope"));
  EXPECT_EQ(r.status, 404);
  EXPECT_TRUE(Body(r)["error"]["message"].is_string());

  r = Call(Make("GET", "/v1/chat/completions"));
  EXPECT_EQ(r.status, 405);
  ASSERT_EQ(r.headers.size(), 1u);
  EXPECT_EQ(r.headers[0].first, "Allow");
  EXPECT_EQ(r.headers[0].second, "POST");

  r = Call(Make("PUT", "/v1/documents"));
  EXPECT_EQ(r.status, 405);
  r = Call(Make("POST", "/health"));
  EXPECT_EQ(r.status, 405);
  // The query string does not change the route.
  EXPECT_EQ(Call(Make("GET", "/v1/models?x=1")).status, 200);
}

TEST_F(HandlerTest, Models) {
  json j = Body(Call(Make("GET", "/v1/models")));
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][0]["id"], "fake-model");
  EXPECT_EQ(j["data"][0]["created"], 1700000000);
  EXPECT_EQ(Call(Make("GET", "/v1/models/fake-model")).status, 200);
  EXPECT_EQ(Call(Make("GET", "/v1/models/other")).status, 404);
}

TEST_F(HandlerTest, AuthOnEverythingButHealth) {
  HandlerOptions o = Fixed();
  o.api_keys = {"k1", "secret-two"};
  Handler h(o, nullptr);
  Request r = Make("GET", "/v1/models");
  Response res = h.Handle(r, engine_);
  EXPECT_EQ(res.status, 401);
  EXPECT_EQ(json::parse(res.body)["error"]["code"], "invalid_api_key");
  r.headers["authorization"] = "Bearer wrong";
  EXPECT_EQ(h.Handle(r, engine_).status, 401);
  r.headers["authorization"] = "Bearer secret-tw";
  EXPECT_EQ(h.Handle(r, engine_).status, 401);
  r.headers["authorization"] = "Bearer secret-two";
  EXPECT_EQ(h.Handle(r, engine_).status, 200);
  r.headers["authorization"] = "bearer k1";
  EXPECT_EQ(h.Handle(r, engine_).status, 200);
  r.headers["authorization"] = "Basic k1";
  EXPECT_EQ(h.Handle(r, engine_).status, 401);
  // Unknown routes do not leak past auth.
  EXPECT_EQ(h.Handle(Make("GET", "/secret"), engine_).status, 401);
  EXPECT_EQ(h.Handle(Make("GET", "/health"), engine_).status, 200);
}

TEST_F(HandlerTest, ChatCompletion) {
  Response r = Call(Make("POST", "/v1/chat/completions",
                         R"({"model":"x","messages":[{"role":"system","content":"be brief"},
                             {"role":"user","content":"hello there world"}],"max_tokens":3})"));
  ASSERT_EQ(r.status, 200) << r.body;
  json j = Body(r);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["model"], "fake-model");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "echo: hello there");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 3);
  EXPECT_EQ(j["usage"]["total_tokens"], j["usage"]["prompt_tokens"].get<int>() + 3);

  // Text content parts are joined.
  r = Call(Make("POST", "/v1/chat/completions",
                R"({"messages":[{"role":"user","content":[{"type":"text","text":"a b"}]}]})"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r)["choices"][0]["message"]["content"], "echo: a b");
  EXPECT_EQ(Body(r)["choices"][0]["finish_reason"], "stop");
}

TEST_F(HandlerTest, ChatCompletionStream) {
  Response r = Call(Make("POST", "/v1/chat/completions",
                         R"({"messages":[{"role":"user","content":"one two"}],"stream":true,
                             "stream_options":{"include_usage":true}})"));
  ASSERT_EQ(r.status, 200);
  ASSERT_TRUE(r.stream);
  EXPECT_EQ(r.content_type, "text/event-stream");
  StringWriter w;
  ASSERT_TRUE(r.stream(w).ok());
  const auto events = SseData(w.out);
  ASSERT_GE(events.size(), 5u) << w.out;
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  json first = json::parse(events[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  std::string finish;
  json usage;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    json e = json::parse(events[i]);
    if (!e["choices"].empty()) {
      const json& c = e["choices"][0];
      if (c["delta"].contains("content")) text += c["delta"]["content"].get<std::string>();
      if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
    }
    if (e.contains("usage") && !e["usage"].is_null()) usage = e["usage"];
  }
  EXPECT_EQ(text, "echo: one two");
  EXPECT_EQ(finish, "stop");
  EXPECT_EQ(usage["completion_tokens"], 3);
}

TEST_F(HandlerTest, StreamErrorBeforeFirstWriteIsReturned) {
  // A full queue: the producer fails before writing, so the server can still send a 503.
  FakeEngine busy(/*max_waiting=*/0);
  busy.CloseGate();
  std::thread holder([&] {
    GenerationParams p;
    (void)busy.Complete("x", p, {});
  });
  while (busy.entered() == 0) std::this_thread::yield();
  Response r = handler_.Handle(
      Make("POST", "/v1/chat/completions",
           R"({"messages":[{"role":"user","content":"hi"}],"stream":true})"),
      busy);
  ASSERT_TRUE(r.stream);
  StringWriter w;
  Status s = r.stream(w);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_TRUE(w.out.empty());
  EXPECT_EQ(ErrorResponseOf(s).status, 503);
  // A non-streaming request gets 503 with Retry-After directly.
  Response r2 = handler_.Handle(
      Make("POST", "/v1/completions", R"({"prompt":"hi"})"), busy);
  EXPECT_EQ(r2.status, 503);
  bool retry_after = false;
  for (const auto& [k, v] : r2.headers) retry_after |= k == "Retry-After" && v == "2";
  EXPECT_TRUE(retry_after);
  busy.OpenGate();
  holder.join();
}

TEST_F(HandlerTest, Completions) {
  Response r = Call(Make("POST", "/v1/completions",
                         R"({"model":"m","prompt":["alpha beta gamma"],"max_tokens":2,
                             "stop":["never"]})"));
  ASSERT_EQ(r.status, 200) << r.body;
  json j = Body(r);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], "echo: alpha");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");

  r = Call(Make("POST", "/v1/completions", R"({"prompt":"a b c","stream":true})"));
  StringWriter w;
  ASSERT_TRUE(r.stream(w).ok());
  auto ev = SseData(w.out);
  ASSERT_GE(ev.size(), 3u);
  EXPECT_EQ(ev.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 1 < ev.size(); ++i) {
    text += json::parse(ev[i])["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(text, "echo: a b c");
}

TEST_F(HandlerTest, EmbeddingsFloatAndBase64) {
  Response r = Call(Make("POST", "/v1/embeddings", R"({"input":["ab","abcdefgh"],"model":"e"})"));
  ASSERT_EQ(r.status, 200) << r.body;
  json j = Body(r);
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][1]["index"], 1);
  std::vector<float> v = j["data"][0]["embedding"].get<std::vector<float>>();
  ASSERT_EQ(v.size(), 4u);

  r = Call(Make("POST", "/v1/embeddings", R"({"input":"ab","encoding_format":"base64"})"));
  ASSERT_EQ(r.status, 200);
  const std::string b64 = Body(r)["data"][0]["embedding"];
  EXPECT_EQ(b64.size(), 24u);  // 16 bytes -> 24 base64 chars with padding
  // Decode and compare with the float form.
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  std::vector<unsigned char> bytes;
  for (size_t i = 0; i + 4 <= b64.size(); i += 4) {
    uint32_t n = 0;
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const int d = val(b64[i + k]);
      if (d < 0) ++pad;
      n = (n << 6) | static_cast<uint32_t>(d < 0 ? 0 : d);
    }
    bytes.push_back(static_cast<unsigned char>(n >> 16));
    if (pad < 2) bytes.push_back(static_cast<unsigned char>(n >> 8));
    if (pad < 1) bytes.push_back(static_cast<unsigned char>(n));
  }
  ASSERT_EQ(bytes.size(), 16u);
  for (size_t k = 0; k < 4; ++k) {
    float f;
    std::memcpy(&f, &bytes[k * 4], 4);
    EXPECT_EQ(f, v[k]);
  }
  EXPECT_EQ(Call(Make("POST", "/v1/embeddings", R"({"input":"a","dimensions":3})")).status, 400);
  EXPECT_EQ(Call(Make("POST", "/v1/embeddings", R"({"input":[1,2,3]})")).status, 400);
}

TEST_F(HandlerTest, DocumentsLifecycle) {
  Response r = Call(Make("POST", "/v1/documents",
                         R"({"name":"notes.txt","text":"the cat sat on the mat"})"));
  ASSERT_EQ(r.status, 200) << r.body;
  json j = Body(r);
  EXPECT_EQ(j["id"], 1);
  EXPECT_EQ(j["chunks"], 1);
  r = Call(Make("POST", "/v1/documents",
                R"({"documents":[{"text":"dogs bark"},{"name":"b","text":"birds sing"}]})"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r)["data"].size(), 2u);
  j = Body(Call(Make("GET", "/v1/documents")));
  ASSERT_EQ(j["data"].size(), 3u);
  EXPECT_EQ(j["data"][0]["name"], "notes.txt");

  r = Call(Make("POST", "/v1/ask", R"({"question":"where is the cat","include_text":true})"));
  ASSERT_EQ(r.status, 200) << r.body;
  j = Body(r);
  EXPECT_EQ(j["answer"], "answer: where is the cat");
  ASSERT_EQ(j["chunks"].size(), 1u);
  EXPECT_EQ(j["chunks"][0]["document"], "notes.txt");
  EXPECT_EQ(j["chunks"][0]["text"], "the cat sat on the mat");
  EXPECT_TRUE(j["chunks"][0].contains("score"));
  EXPECT_TRUE(j["chunks"][0].contains("token_offset"));

  EXPECT_EQ(Call(Make("DELETE", "/v1/documents/1")).status, 200);
  EXPECT_EQ(Call(Make("DELETE", "/v1/documents/1")).status, 404);
  EXPECT_EQ(Call(Make("DELETE", "/v1/documents/-1")).status, 400);
  EXPECT_EQ(Call(Make("DELETE", "/v1/documents/99999999999999999999999")).status, 400);
  EXPECT_EQ(Call(Make("DELETE", "/v1/documents/")).status, 400);
  EXPECT_EQ(Body(Call(Make("GET", "/v1/documents")))["data"].size(), 2u);
}

TEST_F(HandlerTest, AskStream) {
  ASSERT_EQ(Call(Make("POST", "/v1/documents", R"({"text":"red apples"})")).status, 200);
  Response r = Call(Make("POST", "/v1/ask", R"({"question":"apples?","stream":true})"));
  StringWriter w;
  ASSERT_TRUE(r.stream(w).ok());
  auto ev = SseData(w.out);
  ASSERT_GE(ev.size(), 3u);
  EXPECT_EQ(ev.back(), "[DONE]");
  json final_event = json::parse(ev[ev.size() - 2]);
  EXPECT_EQ(final_event["answer"], "answer: apples?");
  EXPECT_EQ(json::parse(ev[0])["delta"], "answer:");
}

TEST_F(HandlerTest, Summarize) {
  Response r = Call(Make("POST", "/v1/summarize", R"({"text":"a long story","name":"s"})"));
  ASSERT_EQ(r.status, 200) << r.body;
  json j = Body(r);
  EXPECT_EQ(j["summary"], "summary: a long story");
  const uint64_t id = j["document_id"];
  r = Call(Make("POST", "/v1/summarize",
                json{{"document_id", id}, {"max_tokens", 2}}.dump()));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r)["summary"], "summary: a");
  EXPECT_EQ(Call(Make("POST", "/v1/summarize", R"({"document_id":77})")).status, 404);
  EXPECT_EQ(Call(Make("POST", "/v1/summarize", R"({})")).status, 400);
  EXPECT_EQ(Call(Make("POST", "/v1/summarize", R"({"text":"x","document_id":1})")).status, 400);
}

TEST_F(HandlerTest, MetricsPage) {
  metrics_.RecordRequest("/v1/models", 200, 0.02);
  metrics_.RecordGeneration(10, 20, 2.0);
  ASSERT_EQ(Call(Make("POST", "/v1/documents", R"({"text":"one two three"})")).status, 200);
  Response r = Call(Make("GET", "/metrics"));
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type.rfind("text/plain", 0), 0u);
  const std::string& m = r.body;
  EXPECT_NE(m.find("muninn_http_requests_total{route=\"/v1/models\",code=\"200\"} 1"),
            std::string::npos) << m;
  EXPECT_NE(m.find("muninn_http_request_duration_seconds_bucket{route=\"/v1/models\",le=\"0.025\"} 1"),
            std::string::npos);
  EXPECT_NE(m.find("muninn_http_request_duration_seconds_bucket{route=\"/v1/models\",le=\"0.01\"} 0"),
            std::string::npos);
  EXPECT_NE(m.find("muninn_completion_tokens_total 20"), std::string::npos);
  EXPECT_NE(m.find("muninn_generation_tokens_per_second 10"), std::string::npos);
  EXPECT_NE(m.find("muninn_bank_documents 1"), std::string::npos);
  EXPECT_NE(m.find("muninn_bank_tokens 3"), std::string::npos);
}

TEST(ModelQueueTest, BoundedAndFirstComeFirstServed) {
  ModelQueue q(2);
  auto first = q.Acquire();
  ASSERT_TRUE(first.ok());
  std::mutex mu;
  std::vector<int> order;
  std::vector<std::thread> waiters;
  for (int i = 0; i < 2; ++i) {
    waiters.emplace_back([&, i] {
      auto l = q.Acquire();
      ASSERT_TRUE(l.ok());
      std::lock_guard<std::mutex> g(mu);
      order.push_back(i);
    });
    // Let waiter i take its ticket before the next one starts.
    while (q.waiting() != i + 1) std::this_thread::yield();
  }
  auto refused = q.Acquire();
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  first->Release();
  for (auto& t : waiters) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1}));
  EXPECT_EQ(q.waiting(), 0);
  EXPECT_FALSE(q.busy());
  auto again = q.Acquire();
  EXPECT_TRUE(again.ok());
}

}  // namespace
}  // namespace muninn::tools::server
