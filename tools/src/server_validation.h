// Private to tools/: checked reading of request bodies. Every field a request may carry goes
// through here before it reaches the model or the bank: wrong type, out of range, too long or
// too many are InvalidArgument naming the field, never a crash or a silent clamp
// (specs/peers.md §1.8: unchecked numeric request fields are how servers get CVEs).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "muninn/core/status.h"

namespace muninn::tools::server {

// Parses `body` as a JSON object. InvalidArgument for an empty body, malformed JSON, nesting
// deeper than `max_depth` (checked before parsing, so hostile nesting never reaches the parser)
// or a top-level value that is not an object.
StatusOr<nlohmann::json> ParseJsonObject(std::string_view body, int max_depth = 32);

// Nesting depth of the arrays/objects in `text`, or -1 as soon as it exceeds `limit`. Brackets
// inside strings do not count. Malformed text is left for the parser to reject.
int JsonDepth(std::string_view text, int limit);

// Reads typed fields of one JSON object. Absent fields and JSON null keep the caller's default.
// On error the Status names the field and param() returns its name (OpenAI's error "param").
class JsonFields {
 public:
  explicit JsonFields(const nlohmann::json& object) : object_(object) {}

  bool Has(std::string_view key) const;
  // An integer in [lo, hi]; floats, strings, booleans are errors.
  Status Int(std::string_view key, int64_t lo, int64_t hi, int64_t* out);
  // An unsigned integer in [lo, hi].
  Status Uint(std::string_view key, uint64_t lo, uint64_t hi, uint64_t* out);
  // A number in [lo, hi] (integers accepted).
  Status Float(std::string_view key, double lo, double hi, float* out);
  Status Bool(std::string_view key, bool* out);
  // A string of at most max_bytes bytes; `required` makes absence an error.
  Status String(std::string_view key, size_t max_bytes, bool required, std::string* out);
  // A string, or an array of 1..max_items strings, each at most max_bytes.
  Status StringOrStrings(std::string_view key, size_t max_items, size_t max_bytes,
                         bool required, std::vector<std::string>* out);
  // An array of at most max_items unsigned integers.
  Status UintArray(std::string_view key, size_t max_items, std::vector<uint64_t>* out);

  // An InvalidArgument "'key' message" that also records `key` as param().
  Status Bad(std::string_view key, std::string message);

  const std::string& param() const { return param_; }

 private:
  const nlohmann::json* Find(std::string_view key) const;

  const nlohmann::json& object_;
  std::string param_;
};

// Decimal digits only, no sign, no leading '+', no overflow: a path id such as /v1/documents/17.
bool ParseDecimalId(std::string_view text, uint64_t* out);

}  // namespace muninn::tools::server
