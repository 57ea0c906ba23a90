#include "server_validation.h"

#include <limits>

namespace muninn::tools::server {

int JsonDepth(std::string_view text, int limit) {
  int depth = 0;
  int max_depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return -1;
      if (depth > max_depth) max_depth = depth;
    } else if (c == ']' || c == '}') {
      if (depth > 0) --depth;
    }
  }
  return max_depth;
}

StatusOr<nlohmann::json> ParseJsonObject(std::string_view body, int max_depth) {
  if (body.empty()) return InvalidArgumentError("the request body is empty; send a JSON object");
  if (JsonDepth(body, max_depth) < 0) {
    return InvalidArgumentError("the JSON body nests deeper than " + std::to_string(max_depth) +
                                " levels");
  }
  // The non-throwing overload: malformed input gives a discarded value, never an exception.
  nlohmann::json j = nlohmann::json::parse(body.begin(), body.end(), nullptr,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgumentError("the request body is not valid JSON");
  if (!j.is_object()) return InvalidArgumentError("the request body must be a JSON object");
  return j;
}

const nlohmann::json* JsonFields::Find(std::string_view key) const {
  auto it = object_.find(key);
  if (it == object_.end() || it->is_null()) return nullptr;
  return &*it;
}

bool JsonFields::Has(std::string_view key) const { return Find(key) != nullptr; }

Status JsonFields::Bad(std::string_view key, std::string message) {
  param_ = std::string(key);
  return InvalidArgumentError("'" + param_ + "' " + message);
}

Status JsonFields::Int(std::string_view key, int64_t lo, int64_t hi, int64_t* out) {
  const nlohmann::json* v = Find(key);
  if (v == nullptr) return Status::Ok();
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    if (hi < 0 || u > static_cast<uint64_t>(hi)) return Bad(key, "must be an integer in " + range);
    if (static_cast<int64_t>(u) < lo) return Bad(key, "must be an integer in " + range);
    *out = static_cast<int64_t>(u);
    return Status::Ok();
  }
  if (v->is_number_integer()) {
    const int64_t i = v->get<int64_t>();
    if (i < lo || i > hi) return Bad(key, "must be an integer in " + range);
    *out = i;
    return Status::Ok();
  }
  return Bad(key, "must be an integer in " + range);
}

Status JsonFields::Uint(std::string_view key, uint64_t lo, uint64_t hi, uint64_t* out) {
  const nlohmann::json* v = Find(key);
  if (v == nullptr) return Status::Ok();
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  if (!v->is_number_unsigned()) {
    // nlohmann stores non-negative integers as unsigned; anything else is negative or not an int.
    return Bad(key, "must be an integer in " + range);
  }
  const uint64_t u = v->get<uint64_t>();
  if (u < lo || u > hi) return Bad(key, "must be an integer in " + range);
  *out = u;
  return Status::Ok();
}

Status JsonFields::Float(std::string_view key, double lo, double hi, float* out) {
  const nlohmann::json* v = Find(key);
  if (v == nullptr) return Status::Ok();
  if (!v->is_number()) {
    return Bad(key, "must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  const double d = v->get<double>();
  if (!(d >= lo && d <= hi)) {
    return Bad(key, "must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  *out = static_cast<float>(d);
  return Status::Ok();
}

Status JsonFields::Bool(std::string_view key, bool* out) {
  const nlohmann::json* v = Find(key);
  if (v == nullptr) return Status::Ok();
  if (!v->is_boolean()) return Bad(key, "must be true or false");
  *out = v->get<bool>();
  return Status::Ok();
}

Status JsonFields::String(std::string_view key, size_t max_bytes, bool required,
                          std::string* out) {
  const nlohmann::json* v = Find(key);
  if (v == nullptr) {
    return required ? Bad(key, "is required") : Status::Ok();
  }
  if (!v->is_string()) return Bad(key, "must be a string");
  const std::string& s = v->get_ref<const std::string&>();
  if (s.size() > max_bytes) {
    return Bad(key, "is longer than " + std::to_string(max_bytes) + " bytes");
  }
  *out = s;
  return Status::Ok();
}

Status JsonFields::StringOrStrings(std::string_view key, size_t max_items, size_t max_bytes,
                                   bool required, std::vector<std::string>* out) {
  const nlohmann::json* v = Find(key);
  if (v == nullptr) {
    return required ? Bad(key, "is required") : Status::Ok();
  }
  std::vector<std::string> items;
  if (v->is_string()) {
    items.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    if (v->empty()) return Bad(key, "must not be an empty array");
    if (v->size() > max_items) {
      return Bad(key, "has more than " + std::to_string(max_items) + " items");
    }
    for (const auto& e : *v) {
      if (!e.is_string()) return Bad(key, "must be a string or an array of strings");
      items.push_back(e.get<std::string>());
    }
  } else {
    return Bad(key, "must be a string or an array of strings");
  }
  for (const auto& s : items) {
    if (s.size() > max_bytes) {
      return Bad(key, "has an item longer than " + std::to_string(max_bytes) + " bytes");
    }
  }
  *out = std::move(items);
  return Status::Ok();
}

Status JsonFields::UintArray(std::string_view key, size_t max_items, std::vector<uint64_t>* out) {
  const nlohmann::json* v = Find(key);
  if (v == nullptr) return Status::Ok();
  if (!v->is_array()) return Bad(key, "must be an array of non-negative integers");
  if (v->size() > max_items) {
    return Bad(key, "has more than " + std::to_string(max_items) + " items");
  }
  std::vector<uint64_t> ids;
  for (const auto& e : *v) {
    if (!e.is_number_unsigned()) return Bad(key, "must be an array of non-negative integers");
    ids.push_back(e.get<uint64_t>());
  }
  *out = std::move(ids);
  return Status::Ok();
}

bool ParseDecimalId(std::string_view text, uint64_t* out) {
  if (text.empty() || text.size() > 20) return false;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

}  // namespace muninn::tools::server
