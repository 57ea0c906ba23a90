// Request checks added in issue 13: empty embedding inputs, retrieval filters naming missing
// documents, /v1/ask's top_k range, Content-Type, and text checks on document upload.
#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "tests/tools/server_fake_engine.h"
#include "tools/src/server_handlers.h"
#include "tools/src/server_metrics.h"

namespace muninn::tools::server {
namespace {

using nlohmann::json;
using testing::FakeEngine;

Request Post(std::string target, std::string body, std::string content_type = "application/json") {
  Request r;
  r.method = "POST";
  r.target = std::move(target);
  r.body = std::move(body);
  if (!content_type.empty()) r.headers["content-type"] = std::move(content_type);
  return r;
}

class HardeningTest : public ::testing::Test {
 protected:
  Response Call(const Request& r) { return handler_.Handle(r, engine_); }
  static std::string Message(const Response& r) {
    return json::parse(r.body)["error"]["message"].get<std::string>();
  }
  static std::string Param(const Response& r) {
    const json p = json::parse(r.body)["error"]["param"];
    return p.is_string() ? p.get<std::string>() : "";
  }
  FakeEngine engine_;
  Metrics metrics_;
  Handler handler_{HandlerOptions{}, &metrics_};
};

TEST_F(HardeningTest, EmptyEmbeddingInputIs400) {
  Response r = Call(Post("/v1/embeddings", R"({"input": ""})"));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Param(r), "input");
  r = Call(Post("/v1/embeddings", R"({"input": ["a", ""]})"));
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(Message(r).find("[1]"), std::string::npos) << Message(r);
  EXPECT_EQ(Call(Post("/v1/embeddings", R"({"input": ["a", "b"]})")).status, 200);
}

TEST_F(HardeningTest, RetrievalFilterNamingAMissingDocumentIs404) {
  ASSERT_EQ(Call(Post("/v1/documents", R"({"text": "red apples"})")).status, 200);
  const uint64_t id = engine_.ListDocuments().value().at(0).id;
  const std::string ok_filter = "[" + std::to_string(id) + "]";
  const std::string bad_filter = "[" + std::to_string(id) + ", 999]";
  const std::string chat = R"({"messages": [{"role": "user", "content": "apples?"}], "memory": true, "documents": )";
  EXPECT_EQ(Call(Post("/v1/chat/completions", chat + ok_filter + "}")).status, 200);
  Response r = Call(Post("/v1/chat/completions", chat + bad_filter + "}"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(Param(r), "documents");
  EXPECT_NE(Message(r).find("999"), std::string::npos) << Message(r);
  r = Call(Post("/v1/completions", R"({"prompt": "x", "documents": [999]})"));
  EXPECT_EQ(r.status, 404);
  r = Call(Post("/v1/ask", R"({"question": "apples?", "documents": [999]})"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(Call(Post("/v1/ask", R"({"question": "apples?", "documents": )" + ok_filter + "}")).status,
            200);
}

TEST_F(HardeningTest, AskTopKErrorStatesTheChunkRange) {
  for (int top_k : {65, 500, 2000}) {
    Response r = Call(Post("/v1/ask", R"({"question": "q", "top_k": )" + std::to_string(top_k) + "}"));
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(Param(r), "top_k");
    EXPECT_NE(Message(r).find("64"), std::string::npos) << Message(r);
    EXPECT_EQ(Message(r).find("1000"), std::string::npos) << Message(r);
  }
  EXPECT_EQ(Call(Post("/v1/ask", R"({"question": "q", "top_k": 64})")).status, 200);
}

TEST_F(HardeningTest, NonJsonContentTypeIs415) {
  const std::string chat = R"({"messages": [{"role": "user", "content": "hi"}]})";
  for (const char* ct : {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"}) {
    Response r = Call(Post("/v1/chat/completions", chat, ct));
    EXPECT_EQ(r.status, 415) << ct;
    EXPECT_NE(Message(r).find("application/json"), std::string::npos);
  }
  EXPECT_EQ(Call(Post("/v1/documents", R"({"text": "x y"})", "text/plain")).status, 415);
  EXPECT_EQ(Call(Post("/v1/chat/completions", chat, "application/json; charset=utf-8")).status, 200);
  EXPECT_EQ(Call(Post("/v1/chat/completions", chat, "Application/JSON")).status, 200);
  EXPECT_EQ(Call(Post("/v1/chat/completions", chat, "")).status, 200);  // unlabelled: parsed
}

TEST_F(HardeningTest, DocumentUploadRejectsBinaryUnlessAsked) {
  const json nul = {{"text", std::string("abc\0def", 7)}};
  Response r = Call(Post("/v1/documents", nul.dump()));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Param(r), "text");
  EXPECT_NE(Message(r).find("binary_ok"), std::string::npos) << Message(r);
  json ok = nul;
  ok["binary_ok"] = true;
  EXPECT_EQ(Call(Post("/v1/documents", ok.dump())).status, 200);
  EXPECT_EQ(Call(Post("/v1/documents", R"({"text": "  \n "})")).status, 400);
}

}  // namespace
}  // namespace muninn::tools::server
