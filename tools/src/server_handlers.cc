#include "server_handlers.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <utility>

#include <nlohmann/json.hpp>

#include "server_validation.h"
#include "text_input.h"

namespace muninn::tools::server {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string Dump(const json& j) {
  // Model text is valid UTF-8 by construction, but a replacement beats an exception if not.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Response JsonResponse(int status, const json& j) {
  Response r;
  r.status = status;
  r.body = Dump(j);
  return r;
}

Response BadField(const Status& s, const JsonFields& f) {
  return ErrorResponse(400, s.message(), f.param());
}

Response MethodNotAllowed(std::string_view allow) {
  Response r = ErrorResponse(405, "method not allowed; this path accepts " + std::string(allow));
  r.headers.emplace_back("Allow", std::string(allow));
  return r;
}

// obj[key] when it is a string, else "" (json::value() would throw on a non-string).
std::string StringOf(const json& obj, const char* key) {
  if (!obj.is_object()) return "";
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Seconds on the model as the engine measured them (queue wait excluded), else wall time.
double ModelSeconds(const GenerationOutput& out, Clock::time_point start) {
  return out.model_seconds > 0.0 ? out.model_seconds
                                 : std::chrono::duration<double>(Clock::now() - start).count();
}

std::string SseEvent(const json& j) { return "data: " + Dump(j) + "\n\n"; }

constexpr std::string_view kSseDone = "data: [DONE]\n\n";

json UsageJson(int64_t prompt, int64_t completion) {
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

json ErrorJson(const Status& s) {
  return {{"error",
           {{"message", std::string(s.message())},
            {"type", HttpStatusOf(s) >= 500 ? "server_error" : "invalid_request_error"},
            {"param", nullptr},
            {"code", nullptr}}}};
}

// The fields every generation endpoint shares (sampling, length, stop strings, and the retrieval
// extensions "retrieval_top_k" and "documents").
// `sampling_top_k` false: "top_k" is left to the caller (on /v1/ask it counts chunks).
Status ParseGeneration(JsonFields& f, const RequestLimits& limits, GenerationParams* p,
                       bool sampling_top_k = true) {
  p->max_tokens = limits.default_max_tokens;
  RETURN_IF_ERROR(f.Int("max_tokens", 1, limits.max_tokens, &p->max_tokens));
  RETURN_IF_ERROR(f.Int("max_completion_tokens", 1, limits.max_tokens, &p->max_tokens));
  RETURN_IF_ERROR(f.Float("temperature", 0.0, 2.0, &p->temperature));
  RETURN_IF_ERROR(f.Float("top_p", 0.0, 1.0, &p->top_p));
  if (f.Has("top_p") && p->top_p <= 0.0f) {
    RETURN_IF_ERROR(f.Float("top_p", 1e-6, 1.0, &p->top_p));
  }
  if (sampling_top_k) {
    int64_t top_k = p->top_k;
    RETURN_IF_ERROR(f.Int("top_k", 0, 1000, &top_k));
    p->top_k = static_cast<int32_t>(top_k);
  }
  RETURN_IF_ERROR(f.Float("min_p", 0.0, 1.0, &p->min_p));
  RETURN_IF_ERROR(f.Float("repeat_penalty", 0.01, 10.0, &p->repeat_penalty));
  RETURN_IF_ERROR(f.Float("repetition_penalty", 0.01, 10.0, &p->repeat_penalty));
  // Accepted for compatibility and range-checked, but not applied (the sampler has no
  // frequency/presence penalties).
  float ignored = 0.0f;
  RETURN_IF_ERROR(f.Float("frequency_penalty", -2.0, 2.0, &ignored));
  RETURN_IF_ERROR(f.Float("presence_penalty", -2.0, 2.0, &ignored));
  int64_t seed = 0;
  RETURN_IF_ERROR(f.Int("seed", INT64_MIN, INT64_MAX, &seed));
  p->seed = static_cast<uint64_t>(seed);
  int64_t n = 1;
  RETURN_IF_ERROR(f.Int("n", 1, 1, &n));
  RETURN_IF_ERROR(f.StringOrStrings("stop", limits.max_stop, limits.max_stop_bytes, false,
                                    &p->stop));
  for (const auto& s : p->stop) {
    if (s.empty()) return f.Bad("stop", "must not contain an empty string");
  }
  RETURN_IF_ERROR(f.Int("retrieval_top_k", 0, limits.max_top_k_chunks, &p->top_k_chunks));
  RETURN_IF_ERROR(f.UintArray("documents", limits.max_document_filter, &p->document_ids));
  return Status::Ok();
}

// 404 naming the first id in the "documents" filter that the bank does not hold, so that a
// retrieval restricted to a deleted or mistyped document is not silently empty. An empty
// Response (status 200, no body) when all exist.
Response CheckDocumentsExist(const GenerationParams& p, Engine& engine) {
  if (p.document_ids.empty()) return Response{};
  auto docs = engine.ListDocuments();
  if (!docs.ok()) return ErrorResponseOf(docs.status());
  for (uint64_t id : p.document_ids) {
    const bool found = std::any_of(docs->begin(), docs->end(),
                                   [id](const DocumentInfo& d) { return d.id == id; });
    if (!found) {
      return ErrorResponse(404, "'documents' names document " + std::to_string(id) +
                                    ", which is not in the bank (GET /v1/documents lists them)",
                           "documents");
    }
  }
  return Response{};
}

// True for application/json and any application/*+json, parameters (charset) ignored.
bool IsJsonContentType(std::string_view v) {
  v = v.substr(0, v.find(';'));
  while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  std::string t(v);
  for (char& c : t) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"));
}

// Rejects OpenAI features this server does not implement, instead of silently ignoring them.
Status RejectUnsupported(const json& body, JsonFields& f) {
  for (const char* key : {"tools", "functions", "response_format", "logit_bias"}) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) continue;
    if ((it->is_array() || it->is_object()) && it->empty()) continue;
    if (std::strcmp(key, "response_format") == 0 && it->is_object() &&
        StringOf(*it, "type") == "text") {
      continue;
    }
    return f.Bad(key, "is not supported by this server");
  }
  for (const char* key : {"logprobs", "echo"}) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null() || (it->is_boolean() && !it->get<bool>())) continue;
    return f.Bad(key, "is not supported by this server");
  }
  return Status::Ok();
}

Status ParseStreamFlags(JsonFields& f, const json& body, bool* stream, bool* include_usage) {
  RETURN_IF_ERROR(f.Bool("stream", stream));
  auto it = body.find("stream_options");
  if (it != body.end() && !it->is_null()) {
    if (!it->is_object()) {
      return f.Bad("stream_options", "must be an object");
    }
    JsonFields so(*it);
    RETURN_IF_ERROR(so.Bool("include_usage", include_usage));
  }
  return Status::Ok();
}

// Chat messages: [{"role": ..., "content": "..." | [{"type": "text", "text": "..."}]}].
Status ParseMessages(const json& body, const RequestLimits& limits,
                     std::vector<model::ChatMessage>* out) {
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array() || it->empty()) {
    return InvalidArgumentError("'messages' must be a non-empty array of {role, content}");
  }
  if (it->size() > limits.max_messages) {
    return InvalidArgumentError("'messages' has more than " + std::to_string(limits.max_messages) +
                                " items");
  }
  for (const auto& m : *it) {
    if (!m.is_object()) return InvalidArgumentError("each of 'messages' must be an object");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return InvalidArgumentError("each message needs a string 'role'");
    }
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";
    if (r != "system" && r != "user" && r != "assistant") {
      return InvalidArgumentError("message role '" + r.substr(0, 32) +
                                  "' is not supported (system, developer, user, assistant)");
    }
    auto content = m.find("content");
    std::string text;
    if (content != m.end() && content->is_string()) {
      text = content->get<std::string>();
    } else if (content != m.end() && content->is_array()) {
      for (const auto& part : *content) {
        if (!part.is_object() || StringOf(part, "type") != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          return InvalidArgumentError("only text content parts ({\"type\": \"text\"}) are supported");
        }
        text += part["text"].get<std::string>();
      }
    } else {
      return InvalidArgumentError("each message needs 'content': a string or text parts");
    }
    out->push_back({std::move(r), std::move(text)});
  }
  return Status::Ok();
}

// Sends SSE events; remembers whether anything went out and whether the peer is gone (after
// which events are dropped: generation cannot be interrupted, but it is bounded by max_tokens).
struct SseState {
  StreamWriter* out = nullptr;
  bool wrote = false;
  bool gone = false;
  bool Send(const std::string& event) {
    if (gone) return false;
    wrote = true;
    if (!out->Write(event)) gone = true;
    return !gone;
  }
};

}  // namespace

int HttpStatusOf(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk: return 200;
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
    case StatusCode::kResourceExhausted:  // a prompt or document too large for the model/bank
      return 400;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition: return 409;
    case StatusCode::kUnimplemented: return 501;
    case StatusCode::kUnavailable:
    case StatusCode::kCancelled: return 503;
    case StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

Response ErrorResponse(int http_status, std::string_view message, std::string_view param,
                       std::string_view code) {
  const char* type = http_status == 401   ? "authentication_error"
                     : http_status == 404 ? "not_found_error"
                     : http_status == 503 ? "overloaded_error"
                     : http_status >= 500 ? "server_error"
                                          : "invalid_request_error";
  json err = {{"message", std::string(message)},
              {"type", type},
              {"param", param.empty() ? json(nullptr) : json(std::string(param))},
              {"code", code.empty() ? json(nullptr) : json(std::string(code))}};
  Response r = JsonResponse(http_status, json{{"error", err}});
  return r;
}

Response ErrorResponseOf(const Status& s, std::string_view param) {
  const int status = HttpStatusOf(s);
  std::string_view code;
  if (s.code() == StatusCode::kResourceExhausted) code = "context_length_exceeded";
  Response r = ErrorResponse(status, s.message(), param, code);
  return r;
}

std::string_view Request::Header(std::string_view name) const {
  auto it = headers.find(std::string(name));
  return it == headers.end() ? std::string_view() : std::string_view(it->second);
}

std::string_view Request::Path() const {
  std::string_view t = target;
  const size_t q = t.find('?');
  return q == std::string_view::npos ? t : t.substr(0, q);
}

Status RequestLimits::Validate() const {
  if (max_tokens < 1 || default_max_tokens < 1 || default_max_tokens > max_tokens) {
    return InvalidArgumentError("request limits: need 1 <= default_max_tokens <= max_tokens");
  }
  if (max_messages < 1 || max_inputs < 1 || max_documents < 1 || json_max_depth < 2) {
    return InvalidArgumentError("request limits: counts must be >= 1 (json depth >= 2)");
  }
  return Status::Ok();
}

Handler::Handler(HandlerOptions options, Metrics* metrics)
    : options_(std::move(options)), metrics_(metrics) {}

int64_t Handler::Now() const {
  if (options_.now_seconds) return options_.now_seconds();
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Handler::NextId(const char* prefix) const {
  return std::string(prefix) + "-" + std::to_string(next_id_.fetch_add(1));
}

bool Handler::Authorized(const Request& request) const {
  if (options_.api_keys.empty()) return true;
  std::string_view h = request.Header("authorization");
  constexpr std::string_view kBearer = "bearer ";
  if (h.size() <= kBearer.size()) return false;
  for (size_t i = 0; i < kBearer.size(); ++i) {
    const char c = h[i];
    if ((c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c) != kBearer[i]) return false;
  }
  std::string_view key = h.substr(kBearer.size());
  while (!key.empty() && key.front() == ' ') key.remove_prefix(1);
  while (!key.empty() && key.back() == ' ') key.remove_suffix(1);
  // Compares every byte of every key so the time taken does not reveal how much of a key matched.
  bool ok = false;
  for (const std::string& k : options_.api_keys) {
    unsigned diff = k.size() == key.size() ? 0u : 1u;
    for (size_t i = 0; i < k.size(); ++i) {
      const unsigned char a = static_cast<unsigned char>(k[i]);
      const unsigned char b = i < key.size() ? static_cast<unsigned char>(key[i]) : 0;
      diff |= static_cast<unsigned>(a ^ b);
    }
    ok |= diff == 0;
  }
  return ok;
}

Response Handler::Handle(const Request& request, Engine& engine) const {
  const std::string_view path = request.Path();
  const std::string& m = request.method;
  auto routed = [this](Response r, const char* route) {
    r.route = route;
    if (r.status == 503) {
      r.headers.emplace_back("Retry-After", std::to_string(options_.retry_after_seconds));
    }
    return r;
  };
  if (path == "/health") {
    return routed(m == "GET" ? Health(engine) : MethodNotAllowed("GET"), "/health");
  }
  if (!Authorized(request)) {
    Response r = ErrorResponse(401, "missing or wrong API key; send 'Authorization: Bearer KEY'",
                               "", "invalid_api_key");
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    return routed(std::move(r), "unauthorized");
  }
  // Every POST endpoint takes JSON. A body labelled as something else (a form from `curl -d`
  // without -H, text/plain) is refused rather than guessed at; an unlabelled one is parsed.
  if (m == "POST" && !request.Header("content-type").empty() &&
      !IsJsonContentType(request.Header("content-type"))) {
    return routed(ErrorResponse(415,
                                "the body must be JSON, sent with 'Content-Type: application/json' "
                                "(got '" + std::string(request.Header("content-type").substr(0, 64)) +
                                    "')"),
                  "unsupported_media_type");
  }
  if (path == "/metrics") {
    return routed(m == "GET" ? MetricsPage(engine) : MethodNotAllowed("GET"), "/metrics");
  }
  if (path == "/v1/models") {
    return routed(m == "GET" ? Models(engine, "") : MethodNotAllowed("GET"), "/v1/models");
  }
  if (path.starts_with("/v1/models/")) {
    const std::string_view id = path.substr(std::strlen("/v1/models/"));
    return routed(m == "GET" ? Models(engine, id) : MethodNotAllowed("GET"), "/v1/models/{id}");
  }
  if (path == "/v1/chat/completions") {
    return routed(m == "POST" ? ChatCompletions(request, engine) : MethodNotAllowed("POST"),
                  "/v1/chat/completions");
  }
  if (path == "/v1/completions") {
    return routed(m == "POST" ? Completions(request, engine) : MethodNotAllowed("POST"),
                  "/v1/completions");
  }
  if (path == "/v1/embeddings") {
    return routed(m == "POST" ? Embeddings(request, engine) : MethodNotAllowed("POST"),
                  "/v1/embeddings");
  }
  if (path == "/v1/documents") {
    if (m == "POST") return routed(IngestDocuments(request, engine), "/v1/documents");
    if (m == "GET") return routed(ListDocuments(engine), "/v1/documents");
    return routed(MethodNotAllowed("GET, POST"), "/v1/documents");
  }
  if (path.starts_with("/v1/documents/")) {
    const std::string_view id = path.substr(std::strlen("/v1/documents/"));
    return routed(m == "DELETE" ? DeleteDocument(id, engine) : MethodNotAllowed("DELETE"),
                  "/v1/documents/{id}");
  }
  if (path == "/v1/ask") {
    return routed(m == "POST" ? Ask(request, engine) : MethodNotAllowed("POST"), "/v1/ask");
  }
  if (path == "/v1/summarize") {
    return routed(m == "POST" ? Summarize(request, engine) : MethodNotAllowed("POST"),
                  "/v1/summarize");
  }
  return routed(ErrorResponse(404, "no such endpoint: " + std::string(path.substr(0, 128))),
                "other");
}

Response Handler::Health(Engine& engine) const {
  const EngineStats s = engine.Stats();
  return JsonResponse(200, {{"status", "ok"},
                            {"model", engine.model_id()},
                            {"queue_waiting", s.queue_waiting},
                            {"bank_chunks", s.bank_chunks}});
}

Response Handler::MetricsPage(Engine& engine) const {
  Response r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = metrics_ != nullptr ? metrics_->Render(engine.Stats()) : Metrics().Render(engine.Stats());
  return r;
}

Response Handler::Models(Engine& engine, std::string_view id) const {
  const int64_t created = Now();
  auto model_json = [&](const std::string& name) {
    return json{{"id", name}, {"object", "model"}, {"created", created}, {"owned_by", "muninn"}};
  };
  if (!id.empty()) {
    for (const std::string& name : {engine.model_id(), engine.embedding_model_id()}) {
      if (name == id) return JsonResponse(200, model_json(name));
    }
    return ErrorResponse(404, "no model named '" + std::string(id.substr(0, 128)) + "'", "model",
                         "model_not_found");
  }
  json data = json::array({model_json(engine.model_id())});
  if (engine.embedding_model_id() != engine.model_id()) {
    data.push_back(model_json(engine.embedding_model_id()));
  }
  return JsonResponse(200, {{"object", "list"}, {"data", data}});
}

Response Handler::ChatCompletions(const Request& request, Engine& engine) const {
  auto body = ParseJsonObject(request.body, options_.limits.json_max_depth);
  if (!body.ok()) return ErrorResponseOf(body.status());
  JsonFields f(*body);
  GenerationParams params;
  bool stream = false;
  bool include_usage = false;
  std::string model_name;
  if (Status s = f.String("model", 256, false, &model_name); !s.ok()) return BadField(s, f);
  if (Status s = ParseGeneration(f, options_.limits, &params); !s.ok()) return BadField(s, f);
  if (Status s = f.Bool("memory", &params.use_memory); !s.ok()) return BadField(s, f);
  if (Status s = ParseStreamFlags(f, *body, &stream, &include_usage); !s.ok()) {
    return BadField(s, f);
  }
  if (Status s = RejectUnsupported(*body, f); !s.ok()) return BadField(s, f);
  auto messages = std::make_shared<std::vector<model::ChatMessage>>();
  if (Status s = ParseMessages(*body, options_.limits, messages.get()); !s.ok()) {
    return ErrorResponse(400, s.message(), "messages");
  }
  if (Response missing = CheckDocumentsExist(params, engine); missing.status != 200) return missing;
  const std::string id = NextId("chatcmpl");
  const int64_t created = Now();
  const std::string model = engine.model_id();
  Metrics* metrics = metrics_;
  if (!stream) {
    const auto start = Clock::now();
    auto out = engine.Chat(*messages, params, {});
    if (!out.ok()) return ErrorResponseOf(out.status());
    if (metrics) {
      metrics->RecordGeneration(out->prompt_tokens, out->completion_tokens,
                                ModelSeconds(*out, start));
    }
    return JsonResponse(
        200, {{"id", id},
              {"object", "chat.completion"},
              {"created", created},
              {"model", model},
              {"choices", json::array({{{"index", 0},
                                        {"message", {{"role", "assistant"}, {"content", out->text}}},
                                        {"logprobs", nullptr},
                                        {"finish_reason", out->finish_reason}}})},
              {"usage", UsageJson(out->prompt_tokens, out->completion_tokens)}});
  }
  Response r;
  r.content_type = "text/event-stream";
  r.headers.emplace_back("Cache-Control", "no-cache");
  r.stream = [&engine, messages, params, id, created, model, include_usage,
              metrics](StreamWriter& w) -> Status {
    auto chunk = [&](json delta, json finish) {
      json c = {{"id", id},
                {"object", "chat.completion.chunk"},
                {"created", created},
                {"model", model},
                {"choices", json::array({{{"index", 0},
                                          {"delta", std::move(delta)},
                                          {"logprobs", nullptr},
                                          {"finish_reason", std::move(finish)}}})}};
      if (include_usage) c["usage"] = nullptr;
      return c;
    };
    SseState sse{&w};
    const auto start = Clock::now();
    auto out = engine.Chat(*messages, params, [&](std::string_view piece) {
      if (!sse.wrote) sse.Send(SseEvent(chunk({{"role", "assistant"}, {"content", ""}}, nullptr)));
      sse.Send(SseEvent(chunk({{"content", std::string(piece)}}, nullptr)));
    });
    if (!out.ok()) {
      if (!sse.wrote) return out.status();
      sse.Send(SseEvent(ErrorJson(out.status())));
      return Status::Ok();
    }
    if (metrics) {
      metrics->RecordGeneration(out->prompt_tokens, out->completion_tokens,
                                ModelSeconds(*out, start));
    }
    if (!sse.wrote) sse.Send(SseEvent(chunk({{"role", "assistant"}, {"content", ""}}, nullptr)));
    sse.Send(SseEvent(chunk(json::object(), out->finish_reason)));
    if (include_usage) {
      json u = chunk(json::object(), nullptr);
      u["choices"] = json::array();
      u["usage"] = UsageJson(out->prompt_tokens, out->completion_tokens);
      sse.Send(SseEvent(u));
    }
    sse.Send(std::string(kSseDone));
    return Status::Ok();
  };
  return r;
}

Response Handler::Completions(const Request& request, Engine& engine) const {
  auto body = ParseJsonObject(request.body, options_.limits.json_max_depth);
  if (!body.ok()) return ErrorResponseOf(body.status());
  JsonFields f(*body);
  GenerationParams params;
  bool stream = false;
  bool include_usage = false;
  std::string model_name;
  std::vector<std::string> prompts;
  if (Status s = f.String("model", 256, false, &model_name); !s.ok()) return BadField(s, f);
  if (Status s = ParseGeneration(f, options_.limits, &params); !s.ok()) return BadField(s, f);
  if (Status s = f.Bool("memory", &params.use_memory); !s.ok()) return BadField(s, f);
  if (Status s = ParseStreamFlags(f, *body, &stream, &include_usage); !s.ok()) {
    return BadField(s, f);
  }
  if (Status s = RejectUnsupported(*body, f); !s.ok()) return BadField(s, f);
  int64_t best_of = 1;
  if (Status s = f.Int("best_of", 1, 1, &best_of); !s.ok()) return BadField(s, f);
  // One prompt per request (a list of one string is accepted, as clients send that too); the
  // body limit bounds its length.
  if (Status s = f.StringOrStrings("prompt", 1, SIZE_MAX, true, &prompts); !s.ok()) {
    return BadField(s, f);
  }
  std::string suffix;
  if (Status s = f.String("suffix", 0, false, &suffix); !s.ok()) return BadField(s, f);
  if (Response missing = CheckDocumentsExist(params, engine); missing.status != 200) return missing;
  auto prompt = std::make_shared<std::string>(std::move(prompts[0]));
  const std::string id = NextId("cmpl");
  const int64_t created = Now();
  const std::string model = engine.model_id();
  Metrics* metrics = metrics_;
  auto choice = [](std::string text, json finish) {
    return json::array({{{"text", std::move(text)},
                         {"index", 0},
                         {"logprobs", nullptr},
                         {"finish_reason", std::move(finish)}}});
  };
  if (!stream) {
    const auto start = Clock::now();
    auto out = engine.Complete(*prompt, params, {});
    if (!out.ok()) return ErrorResponseOf(out.status());
    if (metrics) {
      metrics->RecordGeneration(out->prompt_tokens, out->completion_tokens,
                                ModelSeconds(*out, start));
    }
    return JsonResponse(200, {{"id", id},
                              {"object", "text_completion"},
                              {"created", created},
                              {"model", model},
                              {"choices", choice(out->text, out->finish_reason)},
                              {"usage", UsageJson(out->prompt_tokens, out->completion_tokens)}});
  }
  Response r;
  r.content_type = "text/event-stream";
  r.headers.emplace_back("Cache-Control", "no-cache");
  r.stream = [&engine, prompt, params, id, created, model, include_usage, metrics,
              choice](StreamWriter& w) -> Status {
    auto chunk = [&](std::string text, json finish) {
      return json{{"id", id},
                  {"object", "text_completion"},
                  {"created", created},
                  {"model", model},
                  {"choices", choice(std::move(text), std::move(finish))}};
    };
    SseState sse{&w};
    const auto start = Clock::now();
    auto out = engine.Complete(*prompt, params, [&](std::string_view piece) {
      sse.Send(SseEvent(chunk(std::string(piece), nullptr)));
    });
    if (!out.ok()) {
      if (!sse.wrote) return out.status();
      sse.Send(SseEvent(ErrorJson(out.status())));
      return Status::Ok();
    }
    if (metrics) {
      metrics->RecordGeneration(out->prompt_tokens, out->completion_tokens,
                                ModelSeconds(*out, start));
    }
    sse.Send(SseEvent(chunk("", out->finish_reason)));
    if (include_usage) {
      json u = chunk("", nullptr);
      u["choices"] = json::array();
      u["usage"] = UsageJson(out->prompt_tokens, out->completion_tokens);
      sse.Send(SseEvent(u));
    }
    sse.Send(std::string(kSseDone));
    return Status::Ok();
  };
  return r;
}

namespace {

// Base64 (RFC 4648, with padding) of `n` bytes; the OpenAI client's default embedding encoding
// is base64 of little-endian float32.
std::string Base64(const unsigned char* data, size_t n) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    const uint32_t v = (uint32_t{data[i]} << 16) | (uint32_t{data[i + 1]} << 8) | data[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < n) {
    uint32_t v = uint32_t{data[i]} << 16;
    if (i + 1 < n) v |= uint32_t{data[i + 1]} << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < n ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

}  // namespace

Response Handler::Embeddings(const Request& request, Engine& engine) const {
  auto body = ParseJsonObject(request.body, options_.limits.json_max_depth);
  if (!body.ok()) return ErrorResponseOf(body.status());
  JsonFields f(*body);
  std::vector<std::string> inputs;
  std::string model_name;
  std::string encoding = "float";
  if (Status s = f.String("model", 256, false, &model_name); !s.ok()) return BadField(s, f);
  if (Status s = f.StringOrStrings("input", options_.limits.max_inputs,
                                   options_.limits.max_input_bytes, true, &inputs);
      !s.ok()) {
    return BadField(s, f);
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].empty()) {
      return ErrorResponse(400,
                           inputs.size() == 1 ? std::string("'input' is an empty string")
                                              : "'input'[" + std::to_string(i) + "] is an empty string",
                           "input");
    }
  }
  if (Status s = f.String("encoding_format", 16, false, &encoding); !s.ok()) return BadField(s, f);
  if (encoding != "float" && encoding != "base64") {
    return ErrorResponse(400, "'encoding_format' must be \"float\" or \"base64\"",
                         "encoding_format");
  }
  int64_t dims = -1;
  if (Status s = f.Int("dimensions", 1, 1 << 20, &dims); !s.ok()) return BadField(s, f);
  auto out = engine.Embed(inputs);
  if (!out.ok()) return ErrorResponseOf(out.status());
  if (dims > 0 && !out->vectors.empty() &&
      static_cast<size_t>(dims) != out->vectors.front().size()) {
    return ErrorResponse(400,
                         "'dimensions' must equal the embedder's size " +
                             std::to_string(out->vectors.front().size()),
                         "dimensions");
  }
  json data = json::array();
  for (size_t i = 0; i < out->vectors.size(); ++i) {
    const std::vector<float>& v = out->vectors[i];
    json e = {{"object", "embedding"}, {"index", i}};
    if (encoding == "base64") {
      std::vector<unsigned char> bytes(v.size() * sizeof(float));
      for (size_t k = 0; k < v.size(); ++k) {
        uint32_t bits;
        std::memcpy(&bits, &v[k], sizeof(bits));
        for (int b = 0; b < 4; ++b) bytes[k * 4 + b] = static_cast<unsigned char>(bits >> (8 * b));
      }
      e["embedding"] = Base64(bytes.data(), bytes.size());
    } else {
      e["embedding"] = v;
    }
    data.push_back(std::move(e));
  }
  return JsonResponse(200, {{"object", "list"},
                            {"data", std::move(data)},
                            {"model", engine.embedding_model_id()},
                            {"usage",
                             {{"prompt_tokens", out->prompt_tokens},
                              {"total_tokens", out->prompt_tokens}}}});
}

Response Handler::IngestDocuments(const Request& request, Engine& engine) const {
  auto body = ParseJsonObject(request.body, options_.limits.json_max_depth);
  if (!body.ok()) return ErrorResponseOf(body.status());
  struct Doc {
    std::string name;
    std::string text;
  };
  std::vector<Doc> docs;
  auto read_doc = [&](const json& obj, std::string_view where, Doc* d) -> Response {
    JsonFields f(obj);
    if (Status s = f.String("text", SIZE_MAX, true, &d->text); !s.ok()) {
      return ErrorResponse(400, std::string(where) + std::string(s.message()), f.param());
    }
    if (Status s = f.String("name", options_.limits.max_name_bytes, false, &d->name); !s.ok()) {
      return ErrorResponse(400, std::string(where) + std::string(s.message()), f.param());
    }
    bool binary_ok = false;
    if (Status s = f.Bool("binary_ok", &binary_ok); !s.ok()) {
      return ErrorResponse(400, std::string(where) + std::string(s.message()), f.param());
    }
    // The same checks as `muninn ingest`: no empty text, nothing that looks binary.
    if (Status s = CheckTextInput(d->text, "'text'", binary_ok, "Send \"binary_ok\": true");
        !s.ok()) {
      return ErrorResponse(400, std::string(where) + std::string(s.message()), "text");
    }
    return Response{};
  };
  auto many = body->find("documents");
  const bool is_list = many != body->end() && !many->is_null();
  if (is_list) {
    if (!many->is_array() || many->empty()) {
      return ErrorResponse(400, "'documents' must be a non-empty array of {name, text}",
                           "documents");
    }
    if (many->size() > options_.limits.max_documents) {
      return ErrorResponse(400,
                           "'documents' has more than " +
                               std::to_string(options_.limits.max_documents) +
                               " items; send them in several requests",
                           "documents");
    }
    for (size_t i = 0; i < many->size(); ++i) {
      const json& d = (*many)[i];
      const std::string where = "documents[" + std::to_string(i) + "]: ";
      if (!d.is_object()) return ErrorResponse(400, where + "must be an object", "documents");
      Doc doc;
      Response bad = read_doc(d, where, &doc);
      if (!bad.body.empty()) return bad;
      docs.push_back(std::move(doc));
    }
  } else {
    Doc doc;
    Response bad = read_doc(*body, "", &doc);
    if (!bad.body.empty()) return bad;
    docs.push_back(std::move(doc));
  }
  json stored = json::array();
  for (size_t i = 0; i < docs.size(); ++i) {
    auto out = engine.Ingest(docs[i].name, docs[i].text);
    if (!out.ok()) {
      Status s = out.status();
      if (i > 0) {
        s = s.WithContext("documents[" + std::to_string(i) + "] (the " + std::to_string(i) +
                          " before it are stored: " + Dump(stored) + ")");
      }
      return ErrorResponseOf(s);
    }
    stored.push_back({{"id", out->id},
                      {"object", "document"},
                      {"name", docs[i].name},
                      {"tokens", out->tokens},
                      {"chunks", out->chunks}});
  }
  if (!is_list) return JsonResponse(200, stored[0]);
  return JsonResponse(200, {{"object", "list"}, {"data", stored}});
}

Response Handler::ListDocuments(Engine& engine) const {
  auto docs = engine.ListDocuments();
  if (!docs.ok()) return ErrorResponseOf(docs.status());
  json data = json::array();
  for (const DocumentInfo& d : *docs) {
    data.push_back({{"id", d.id},
                    {"object", "document"},
                    {"name", d.name},
                    {"tokens", d.tokens},
                    {"chunks", d.chunks}});
  }
  return JsonResponse(200, {{"object", "list"}, {"data", data}});
}

Response Handler::DeleteDocument(std::string_view id_text, Engine& engine) const {
  uint64_t id = 0;
  if (!ParseDecimalId(id_text, &id)) {
    return ErrorResponse(400, "a document id is a non-negative decimal integer", "id");
  }
  if (Status s = engine.DeleteDocument(id); !s.ok()) return ErrorResponseOf(s);
  return JsonResponse(200, {{"id", id}, {"object", "document"}, {"deleted", true}});
}

namespace {

json ChunksJson(const std::vector<ChunkRef>& chunks, bool with_text) {
  json arr = json::array();
  for (const ChunkRef& c : chunks) {
    json j = {{"chunk_id", c.chunk_id},
              {"document_id", c.document_id},
              {"document", c.document},
              {"token_offset", c.token_offset},
              {"tokens", c.tokens},
              {"score", c.score}};
    if (with_text) j["text"] = c.text;
    arr.push_back(std::move(j));
  }
  return arr;
}

}  // namespace

Response Handler::Ask(const Request& request, Engine& engine) const {
  auto body = ParseJsonObject(request.body, options_.limits.json_max_depth);
  if (!body.ok()) return ErrorResponseOf(body.status());
  JsonFields f(*body);
  GenerationParams params;
  std::string question;
  bool stream = false;
  bool include_usage = false;
  bool include_text = false;
  if (Status s = f.String("question", 64 * 1024, true, &question); !s.ok()) return BadField(s, f);
  if (question.find_first_not_of(" \t\r\n") == std::string::npos) {
    return ErrorResponse(400, "'question' is empty", "question");
  }
  // "top_k" on /v1/ask means chunks (as `muninn ask --top-k`), not sampling: [0, 64].
  if (Status s = ParseGeneration(f, options_.limits, &params, /*sampling_top_k=*/false); !s.ok()) {
    return BadField(s, f);
  }
  if (Status s = f.Int("top_k", 0, options_.limits.max_top_k_chunks, &params.top_k_chunks);
      !s.ok()) {
    return BadField(s, f);
  }
  if (Status s = f.Bool("include_text", &include_text); !s.ok()) return BadField(s, f);
  if (Status s = ParseStreamFlags(f, *body, &stream, &include_usage); !s.ok()) {
    return BadField(s, f);
  }
  if (Response missing = CheckDocumentsExist(params, engine); missing.status != 200) return missing;
  params.use_memory = true;
  const std::string id = NextId("ask");
  Metrics* metrics = metrics_;
  auto result_json = [id, question, include_text](const AskOutput& out) {
    return json{{"id", id},
                {"object", "ask"},
                {"question", question},
                {"answer", out.generation.text},
                {"finish_reason", out.generation.finish_reason},
                {"chunks", ChunksJson(out.chunks, include_text)},
                {"usage", UsageJson(out.generation.prompt_tokens, out.generation.completion_tokens)}};
  };
  if (!stream) {
    const auto start = Clock::now();
    auto out = engine.Ask(question, params, include_text, {});
    if (!out.ok()) return ErrorResponseOf(out.status());
    if (metrics) {
      metrics->RecordGeneration(out->generation.prompt_tokens, out->generation.completion_tokens,
                                ModelSeconds(out->generation, start));
    }
    return JsonResponse(200, result_json(*out));
  }
  Response r;
  r.content_type = "text/event-stream";
  r.headers.emplace_back("Cache-Control", "no-cache");
  r.stream = [&engine, question, params, include_text, metrics, result_json,
              id](StreamWriter& w) -> Status {
    SseState sse{&w};
    const auto start = Clock::now();
    auto out = engine.Ask(question, params, include_text, [&](std::string_view piece) {
      sse.Send(SseEvent({{"id", id}, {"object", "ask.delta"}, {"delta", std::string(piece)}}));
    });
    if (!out.ok()) {
      if (!sse.wrote) return out.status();
      sse.Send(SseEvent(ErrorJson(out.status())));
      return Status::Ok();
    }
    if (metrics) {
      metrics->RecordGeneration(out->generation.prompt_tokens, out->generation.completion_tokens,
                                ModelSeconds(out->generation, start));
    }
    sse.Send(SseEvent(result_json(*out)));
    sse.Send(std::string(kSseDone));
    return Status::Ok();
  };
  return r;
}

Response Handler::Summarize(const Request& request, Engine& engine) const {
  auto body = ParseJsonObject(request.body, options_.limits.json_max_depth);
  if (!body.ok()) return ErrorResponseOf(body.status());
  JsonFields f(*body);
  std::string text;
  std::string name;
  uint64_t doc_id = 0;
  int64_t max_tokens = options_.limits.default_max_tokens;
  if (Status s = f.String("text", SIZE_MAX, false, &text); !s.ok()) return BadField(s, f);
  if (Status s = f.String("name", options_.limits.max_name_bytes, false, &name); !s.ok()) {
    return BadField(s, f);
  }
  if (Status s = f.Uint("document_id", 0, UINT64_MAX, &doc_id); !s.ok()) return BadField(s, f);
  if (Status s = f.Int("max_tokens", 1, options_.limits.max_tokens, &max_tokens); !s.ok()) {
    return BadField(s, f);
  }
  const bool has_text = f.Has("text");
  const bool has_doc = f.Has("document_id");
  if (has_text == has_doc) {
    return ErrorResponse(400, "send exactly one of 'text' and 'document_id'",
                         has_text ? "document_id" : "text");
  }
  if (has_text && text.find_first_not_of(" \t\r\n") == std::string::npos) {
    return ErrorResponse(400, "'text' is empty", "text");
  }
  const auto start = Clock::now();
  auto out = engine.Summarize(name, text, has_doc ? std::optional<uint64_t>(doc_id) : std::nullopt,
                              max_tokens, {});
  if (!out.ok()) return ErrorResponseOf(out.status());
  if (metrics_) {
    metrics_->RecordGeneration(out->tokens, out->completion_tokens,
                               std::chrono::duration<double>(Clock::now() - start).count());
  }
  return JsonResponse(200, {{"id", NextId("sum")},
                            {"object", "summary"},
                            {"summary", out->summary},
                            {"document_id", out->document_id},
                            {"tokens", out->tokens},
                            {"sections", out->sections},
                            {"usage", UsageJson(out->tokens, out->completion_tokens)}});
}

}  // namespace muninn::tools::server
