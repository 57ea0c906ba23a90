// Private to tools/: the transport-neutral request and response the HTTP handlers work on.
//
// The socket layer (server_http.h) turns a parsed Beast request into a Request and a Response
// back into bytes; the handlers (server_handlers.h) never see a socket, so they are tested and
// fuzzed as plain functions. A response either carries its whole body or a stream producer
// (server-sent events): the producer writes pieces through a StreamWriter, which on a socket
// sends each piece as one HTTP chunk and in tests appends to a string.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "muninn/core/status.h"

namespace muninn::tools::server {

struct Request {
  std::string method;  // "GET", "POST", ... as sent
  std::string target;  // path plus optional "?query", as sent
  // Header names lower-cased; a repeated header keeps its last value.
  std::map<std::string, std::string> headers;
  std::string body;
  std::string remote;  // peer address, for logs only

  // The value of header `name` (lower-case), or "".
  std::string_view Header(std::string_view name) const;
  // target without the query string.
  std::string_view Path() const;
};

// Where a streaming producer writes. Write returns false once the peer is gone (or its write
// timed out); the producer should then stop producing as soon as it can. Not thread-safe: one
// producer writes to one writer.
class StreamWriter {
 public:
  virtual ~StreamWriter() = default;
  virtual bool Write(std::string_view data) = 0;
};

// Produces a streamed body. If it returns an error before its first Write, the server sends a
// plain error response built from that Status instead of the stream (so e.g. a full model queue
// is still a 503); after the first Write the error can only be reported inside the stream, which
// the producer does itself.
using StreamProducer = std::function<Status(StreamWriter& out)>;

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
  std::string body;
  StreamProducer stream;  // when set, `body` is ignored and the body is streamed chunked
  // The endpoint label for metrics ("/v1/chat/completions", "other" for unknown routes).
  std::string route = "other";
};

// Maps a Status to an HTTP status code (InvalidArgument → 400, NotFound → 404, Unavailable and
// ResourceExhausted-of-the-queue → 503, ...).
int HttpStatusOf(const Status& status);

// An error response in OpenAI's shape:
//   {"error": {"message": "...", "type": "invalid_request_error", "param": null, "code": null}}
// `param` names the offending request field when known ("" for none).
Response ErrorResponse(int http_status, std::string_view message, std::string_view param = "",
                       std::string_view code = "");
// ErrorResponse(HttpStatusOf(s), s.message()), plus Retry-After for 503.
Response ErrorResponseOf(const Status& s, std::string_view param = "");

}  // namespace muninn::tools::server
