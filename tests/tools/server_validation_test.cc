// Request validation: every numeric and typed field rejects the wrong type, negative and huge
// values with a 400 in OpenAI's error shape naming the field; plus the JSON depth guard and a
// seeded mutation test of request parsing.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/tools/server_fake_engine.h"
#include "tools/src/server_handlers.h"
#include "tools/src/server_validation.h"

namespace muninn::tools::server {
namespace {

using nlohmann::json;
using testing::FakeEngine;
using testing::StringWriter;

struct Case {
  const char* path;
  const char* field;
  json value;
};

json BaseBody(const std::string& path) {
  if (path == "/v1/chat/completions") {
    return {{"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}};
  }
  if (path == "/v1/completions") return {{"prompt", "hi"}};
  if (path == "/v1/embeddings") return {{"input", "hi"}};
  if (path == "/v1/ask") return {{"question", "hi"}};
  if (path == "/v1/summarize") return {{"text", "hi"}};
  return {{"text", "hi"}};
}

TEST(ServerValidationTest, BadFieldsAre400WithParam) {
  const json huge = json::parse("123456789012345678901234567890");
  const std::vector<Case> cases = {
      {"/v1/chat/completions", "max_tokens", -1},
      {"/v1/chat/completions", "max_tokens", 0},
      {"/v1/chat/completions", "max_tokens", 1 << 30},
      {"/v1/chat/completions", "max_tokens", huge},
      {"/v1/chat/completions", "max_tokens", "10"},
      {"/v1/chat/completions", "max_tokens", 10.5},
      {"/v1/chat/completions", "max_tokens", true},
      {"/v1/chat/completions", "max_completion_tokens", -5},
      {"/v1/chat/completions", "temperature", -0.1},
      {"/v1/chat/completions", "temperature", 2.5},
      {"/v1/chat/completions", "temperature", "hot"},
      {"/v1/chat/completions", "top_p", 0},
      {"/v1/chat/completions", "top_p", 1.5},
      {"/v1/chat/completions", "top_k", -1},
      {"/v1/chat/completions", "top_k", 100000},
      {"/v1/chat/completions", "min_p", -1},
      {"/v1/chat/completions", "repeat_penalty", 0},
      {"/v1/chat/completions", "frequency_penalty", 3},
      {"/v1/chat/completions", "presence_penalty", -3},
      {"/v1/chat/completions", "seed", 1.5},
      {"/v1/chat/completions", "seed", huge},
      {"/v1/chat/completions", "n", 2},
      {"/v1/chat/completions", "n", -1},
      {"/v1/chat/completions", "stop", 5},
      {"/v1/chat/completions", "stop", json::array({"a", "b", "c", "d", "e"})},
      {"/v1/chat/completions", "stop", ""},
      {"/v1/chat/completions", "stop", std::string(100, 'x')},
      {"/v1/chat/completions", "stream", "yes"},
      {"/v1/chat/completions", "stream_options", 1},
      {"/v1/chat/completions", "memory", 1},
      {"/v1/chat/completions", "retrieval_top_k", -3},
      {"/v1/chat/completions", "retrieval_top_k", 1000000},
      {"/v1/chat/completions", "documents", json::array({-1})},
      {"/v1/chat/completions", "documents", "1"},
      {"/v1/chat/completions", "tools", json::array({{{"type", "function"}}})},
      {"/v1/chat/completions", "logprobs", true},
      {"/v1/chat/completions", "model", 7},
      {"/v1/chat/completions", "messages", json::array()},
      {"/v1/chat/completions", "messages", "hi"},
      {"/v1/chat/completions", "messages", json::array({{{"role", "tool"}, {"content", "x"}}})},
      {"/v1/chat/completions", "messages", json::array({{{"role", "user"}, {"content", 5}}})},
      {"/v1/chat/completions", "messages",
       json::array({{{"role", "user"}, {"content", json::array({{{"type", 5}}})}}})},
      {"/v1/completions", "prompt", json::array({"a", "b"})},
      {"/v1/completions", "prompt", 12},
      {"/v1/completions", "best_of", 3},
      {"/v1/completions", "echo", true},
      {"/v1/completions", "max_tokens", -100},
      {"/v1/embeddings", "input", json::array()},
      {"/v1/embeddings", "input", json::array({"a", 1})},
      {"/v1/embeddings", "input", std::string(70000, 'a')},
      {"/v1/embeddings", "encoding_format", "int8"},
      {"/v1/embeddings", "dimensions", -4},
      {"/v1/ask", "question", ""},
      {"/v1/ask", "question", 3},
      {"/v1/ask", "top_k", -1},
      {"/v1/ask", "top_k", 65},
      {"/v1/ask", "include_text", "true"},
      {"/v1/ask", "max_tokens", huge},
      {"/v1/summarize", "max_tokens", 0},
      {"/v1/summarize", "document_id", -2},
      {"/v1/summarize", "name", 4},
      {"/v1/documents", "text", ""},
      {"/v1/documents", "text", 17},
      {"/v1/documents", "name", json::object()},
      {"/v1/documents", "name", std::string(600, 'n')},
      {"/v1/documents", "documents", json::array()},
      {"/v1/documents", "documents", json::array({1})},
  };
  FakeEngine engine;
  HandlerOptions options;
  Handler handler(options, nullptr);
  for (const Case& c : cases) {
    json body = BaseBody(c.path);
    body[c.field] = c.value;
    Request r;
    r.method = "POST";
    r.target = c.path;
    r.body = body.dump();
    Response res = handler.Handle(r, engine);
    SCOPED_TRACE(std::string(c.path) + " " + r.body.substr(0, 200));
    EXPECT_EQ(res.status, 400);
    EXPECT_FALSE(res.stream);
    json j = json::parse(res.body, nullptr, false);
    ASSERT_TRUE(j.is_object());
    ASSERT_TRUE(j["error"]["message"].is_string());
    EXPECT_EQ(j["error"]["type"], "invalid_request_error");
    EXPECT_EQ(j["error"]["param"], c.field) << j.dump();
  }
  // Too many documents per request.
  json many = {{"documents", json::array()}};
  for (int i = 0; i < 17; ++i) many["documents"].push_back({{"text", "x"}});
  Request r{"POST", "/v1/documents", {}, many.dump(), ""};
  EXPECT_EQ(handler.Handle(r, engine).status, 400);
  // Limits apply exactly at the boundary.
  json ok = BaseBody("/v1/chat/completions");
  ok["max_tokens"] = options.limits.max_tokens;
  Request r2{"POST", "/v1/chat/completions", {}, ok.dump(), ""};
  EXPECT_EQ(handler.Handle(r2, engine).status, 200);
}

TEST(ServerValidationTest, MalformedBodies) {
  FakeEngine engine;
  Handler handler(HandlerOptions{}, nullptr);
  for (const std::string& body :
       {std::string(""), std::string("{"), std::string("[]"), std::string("3"),
        std::string("{\"messages\": [}"), std::string("\xff\xfe{}"),
        std::string("{\"prompt\": \"\xc3\x28\"}"), std::string(100000, '['),
        std::string(50, '{') + std::string(50, '}')}) {
    for (const char* path : {"/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                             "/v1/documents", "/v1/ask", "/v1/summarize"}) {
      Request r{"POST", path, {}, body, ""};
      Response res = handler.Handle(r, engine);
      EXPECT_EQ(res.status, 400) << path << " " << body.substr(0, 40);
      EXPECT_TRUE(json::parse(res.body, nullptr, false).contains("error"));
    }
  }
}

TEST(ServerValidationTest, JsonDepthAndIds) {
  EXPECT_EQ(JsonDepth("{}", 4), 1);
  EXPECT_EQ(JsonDepth(R"({"a":[[1]]})", 4), 3);
  EXPECT_EQ(JsonDepth(R"({"a":"[[[[[[[["})", 4), 1);     // brackets in strings do not count
  EXPECT_EQ(JsonDepth(R"({"a":"\"[[[[[[["})", 4), 1);    // nor after an escaped quote
  EXPECT_EQ(JsonDepth("[[[[[", 4), -1);
  uint64_t id = 0;
  EXPECT_TRUE(ParseDecimalId("0", &id));
  EXPECT_EQ(id, 0u);
  EXPECT_TRUE(ParseDecimalId("18446744073709551615", &id));
  EXPECT_EQ(id, UINT64_MAX);
  EXPECT_FALSE(ParseDecimalId("18446744073709551616", &id));
  EXPECT_FALSE(ParseDecimalId("", &id));
  EXPECT_FALSE(ParseDecimalId("+1", &id));
  EXPECT_FALSE(ParseDecimalId("1a", &id));
  EXPECT_FALSE(ParseDecimalId("-1", &id));
}

// Seeded mutations of valid requests (bytes flipped, inserted, deleted; fields replaced by values
// of other types): Handle must never throw or crash, and must answer 200 or a JSON error.
TEST(ServerValidationTest, MutatedRequestsNeverCrash) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::vector<std::pair<std::string, std::string>> seeds = {
      {"/v1/chat/completions",
       R"({"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"temperature":0.5,"stream":false,"stop":["x"]})"},
      {"/v1/completions", R"({"prompt":"hello","max_tokens":3,"top_p":0.9,"seed":7})"},
      {"/v1/embeddings", R"({"input":["a","b"],"encoding_format":"base64"})"},
      {"/v1/documents", R"({"documents":[{"name":"a","text":"some words here"}]})"},
      {"/v1/ask", R"({"question":"what words","top_k":2,"include_text":true})"},
      {"/v1/summarize", R"({"text":"a b c","max_tokens":4})"},
  };
  const std::vector<json> replacements = {json(nullptr), json(-1), json(0), json(1e308),
                                          json(-9223372036854775807LL), json(UINT64_MAX),
                                          json("s"), json::array(), json::object(), json(true),
                                          json::array({json::array({1})})};
  FakeEngine engine(/*max_waiting=*/64);
  Handler handler(HandlerOptions{}, nullptr);
  const std::string alphabet = "{}[]\":,0123456789-.eE truefalsn\\u\xff";
  for (int iter = 0; iter < 3000; ++iter) {
    const auto& [path, valid] = seeds[rng() % seeds.size()];
    std::string body = valid;
    if (rng() % 2 == 0) {
      json j = json::parse(valid);
      // Replace a random top-level field (or a new one) by a value of another type.
      std::vector<std::string> keys;
      for (auto& [k, v] : j.items()) keys.push_back(k);
      keys.push_back("max_tokens");
      keys.push_back("messages");
      j[keys[rng() % keys.size()]] = replacements[rng() % replacements.size()];
      body = j.dump();
    } else {
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits && !body.empty(); ++e) {
        const size_t pos = rng() % body.size();
        switch (rng() % 3) {
          case 0: body[pos] = alphabet[rng() % alphabet.size()]; break;
          case 1: body.insert(pos, 1, alphabet[rng() % alphabet.size()]); break;
          default: body.erase(pos, 1); break;
        }
      }
    }
    Request r{"POST", path, {}, body, ""};
    Response res;
    ASSERT_NO_THROW(res = handler.Handle(r, engine)) << path << " " << body;
    if (res.stream) {
      StringWriter w;
      Status s;
      ASSERT_NO_THROW(s = res.stream(w)) << body;
      EXPECT_TRUE(s.ok()) << s;
      continue;
    }
    ASSERT_TRUE(res.status == 200 || res.status == 400 || res.status == 404)
        << res.status << " " << path << " " << body << " -> " << res.body;
    const json j = json::parse(res.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << res.body;
    if (res.status != 200) {
      EXPECT_TRUE(j["error"]["message"].is_string()) << res.body;
    }
  }
}

}  // namespace
}  // namespace muninn::tools::server
