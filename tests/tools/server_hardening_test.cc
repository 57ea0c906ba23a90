// Request checks added in issue 13: text checks on document upload.
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
