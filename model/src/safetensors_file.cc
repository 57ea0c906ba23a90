#include "muninn/model/safetensors_file.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "muninn/core/mapped_file.h"
#include "tensor_view.h"

namespace muninn::model {
namespace {

using Json = nlohmann::json;

struct StDType {
  std::string_view name;
  uint64_t size;
  std::optional<DType> dtype;
};

constexpr StDType kDTypes[] = {
    {"F32", 4, DType::kF32},  {"F16", 2, DType::kF16},   {"BF16", 2, DType::kBF16},
    {"F64", 8, std::nullopt}, {"I64", 8, std::nullopt},  {"I32", 4, std::nullopt},
    {"I16", 2, std::nullopt}, {"I8", 1, std::nullopt},   {"U64", 8, std::nullopt},
    {"U32", 4, std::nullopt}, {"U16", 2, std::nullopt},  {"U8", 1, std::nullopt},
    {"BOOL", 1, std::nullopt}, {"F8_E4M3", 1, std::nullopt}, {"F8_E5M2", 1, std::nullopt},
};

const StDType* FindDType(std::string_view name) {
  for (const StDType& d : kDTypes) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Reads a non-negative JSON integer that fits int64.
bool AsCount(const Json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return *out <= static_cast<uint64_t>(INT64_MAX);
  }
  if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (v < 0) return false;
    *out = static_cast<uint64_t>(v);
    return true;
  }
  return false;
}

// Parses the header with a callback that rejects deep nesting and duplicate keys at any level
// (nlohmann would otherwise keep the last duplicate silently). Never throws.
Status ParseHeaderJson(std::string_view text, const std::string& source, Json* out) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  std::string problem;
  auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) -> bool {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        if (depth >= SafetensorsFile::kMaxJsonDepth) {
          if (problem.empty()) problem = "the JSON is nested too deeply";
          return false;
        }
        if (event == Json::parse_event_t::object_start) keys.emplace_back();
        return true;
      case Json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        return true;
      case Json::parse_event_t::key:
        if (!keys.empty() && parsed.is_string() &&
            !keys.back().insert(parsed.get<std::string>()).second && problem.empty()) {
          problem = "duplicate key '" + parsed.get<std::string>() + "'";
        }
        return true;
      default:
        return true;
    }
  };
  try {
    *out = Json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/false);
  } catch (const std::exception& e) {  // the adapter boundary: nothing escapes
    return InvalidArgumentError(source + ": the safetensors header is not valid JSON: " +
                                e.what());
  }
  if (out->is_discarded()) {
    return InvalidArgumentError(source + ": the safetensors header is not valid JSON");
  }
  if (!problem.empty()) {
    return InvalidArgumentError(source + ": invalid safetensors header: " + problem);
  }
  if (!out->is_object()) {
    return InvalidArgumentError(source + ": the safetensors header is not a JSON object");
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapped, MappedFile::Open(path));
  std::shared_ptr<const MappedFile> shared(std::move(mapped));
  const std::span<const uint8_t> bytes = shared->bytes();
  return Parse(bytes, std::move(shared), path);
}

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Parse(
    std::span<const uint8_t> bytes, std::shared_ptr<const void> keep_alive, std::string name) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->name_ = std::move(name);
  file->bytes_ = bytes;
  file->buffer_ = WrapHostMemory(const_cast<uint8_t*>(bytes.data()), bytes.size(),
                                 std::move(keep_alive));
  RETURN_IF_ERROR(file->ParseAll());
  return file;
}

Status SafetensorsFile::ParseAll() {
  if (bytes_.size() < 8) {
    return InvalidArgumentError(name_ + ": " + std::to_string(bytes_.size()) +
                                " bytes is too short for a safetensors file (8-byte header "
                                "length missing)");
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes_.data(), 8);
  if (header_len > kMaxHeaderBytes || header_len > bytes_.size() - 8) {
    return InvalidArgumentError(name_ + ": safetensors header length " +
                                std::to_string(header_len) + " exceeds the file (" +
                                std::to_string(bytes_.size()) + " bytes) or the " +
                                std::to_string(kMaxHeaderBytes) +
                                "-byte limit; the file is truncated or not safetensors");
  }
  data_offset_ = 8 + header_len;
  const uint64_t data_size = bytes_.size() - data_offset_;
  const std::string_view text(reinterpret_cast<const char*>(bytes_.data()) + 8,
                              static_cast<size_t>(header_len));
  Json header;
  RETURN_IF_ERROR(ParseHeaderJson(text, name_, &header));

  for (const auto& [key, entry] : header.items()) {
    const std::string where = name_ + ": tensor '" + key + "'";
    if (key == "__metadata__") {
      if (!entry.is_object()) {
        return InvalidArgumentError(name_ + ": __metadata__ must be an object of strings");
      }
      for (const auto& [mk, mv] : entry.items()) {
        if (!mv.is_string()) {
          return InvalidArgumentError(name_ + ": __metadata__ value '" + mk +
                                      "' is not a string");
        }
        metadata_.emplace(mk, mv.get<std::string>());
      }
      continue;
    }
    if (!entry.is_object()) return InvalidArgumentError(where + " is not a JSON object");
    const auto dtype_it = entry.find("dtype");
    const auto shape_it = entry.find("shape");
    const auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) {
      return InvalidArgumentError(where + " has no string 'dtype'");
    }
    const StDType* dt = FindDType(dtype_it->get<std::string>());
    if (dt == nullptr) {
      return InvalidArgumentError(where + " has unknown dtype '" + dtype_it->get<std::string>() +
                                  "'");
    }
    if (shape_it == entry.end() || !shape_it->is_array()) {
      return InvalidArgumentError(where + " has no 'shape' array");
    }
    if (shape_it->size() > static_cast<size_t>(kMaxHeaderDims)) {
      return InvalidArgumentError(where + " has " + std::to_string(shape_it->size()) +
                                  " dimensions; a safetensors header may give at most " +
                                  std::to_string(kMaxHeaderDims));
    }
    int64_t dims[kMaxHeaderDims] = {};
    uint64_t numel = 1;
    for (size_t d = 0; d < shape_it->size(); ++d) {
      uint64_t n = 0;
      if (!AsCount((*shape_it)[d], &n)) {
        return InvalidArgumentError(where + " has a dimension that is not a non-negative "
                                    "64-bit integer: " + (*shape_it)[d].dump());
      }
      if (__builtin_mul_overflow(numel, n, &numel) || numel > static_cast<uint64_t>(INT64_MAX)) {
        return InvalidArgumentError(where + ": the element count overflows 64 bits");
      }
      dims[d] = static_cast<int64_t>(n);
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, dt->size, &nbytes)) {
      return InvalidArgumentError(where + ": the byte size overflows 64 bits");
    }
    uint64_t begin = 0, end = 0;
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !AsCount((*offsets_it)[0], &begin) || !AsCount((*offsets_it)[1], &end)) {
      return InvalidArgumentError(where + " needs 'data_offsets': [begin, end] of non-negative "
                                  "integers");
    }
    if (begin > end || end > data_size) {
      return InvalidArgumentError(where + " data_offsets [" + std::to_string(begin) + ", " +
                                  std::to_string(end) + "] are outside the " +
                                  std::to_string(data_size) +
                                  "-byte data section; the file is truncated or corrupt");
    }
    if (end - begin != nbytes) {
      return InvalidArgumentError(where + " (" + dtype_it->get<std::string>() + " shape " +
                                  shape_it->dump() + ") needs " + std::to_string(nbytes) +
                                  " bytes but data_offsets span " + std::to_string(end - begin));
    }
    if (shape_it->size() > static_cast<size_t>(kMaxDims)) {
      // Kept aside (see skipped_tensors()): a loader that needs it gets a clear error, one that
      // does not (Huginn and its freqs_cis buffer) loads.
      SkippedTensor t;
      t.name = key;
      t.type_name = Lower(dt->name);
      t.dims.assign(dims, dims + shape_it->size());
      t.offset = data_offset_ + begin;
      t.nbytes = nbytes;
      skipped_.push_back(std::move(t));
      continue;
    }
    TensorInfo t;
    t.name = key;
    t.type_name = Lower(dt->name);
    t.dtype = dt->dtype;
    t.shape = Shape(std::span<const int64_t>(dims, shape_it->size()));
    t.offset = data_offset_ + begin;
    t.nbytes = nbytes;
    tensors_.push_back(std::move(t));
  }
  std::sort(tensors_.begin(), tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.offset < b.offset; });
  // No two tensors may share bytes: a dtype or shape edited without moving the data would make
  // one tensor read another's. Every range was checked to lie inside the data section above.
  std::vector<std::tuple<uint64_t, uint64_t, const std::string*>> ranges;
  for (const TensorInfo& t : tensors_) {
    if (t.nbytes > 0) ranges.emplace_back(t.offset, t.offset + t.nbytes, &t.name);
  }
  for (const SkippedTensor& t : skipped_) {
    if (t.nbytes > 0) ranges.emplace_back(t.offset, t.offset + t.nbytes, &t.name);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    const auto& [b0, e0, n0] = ranges[i - 1];
    const auto& [b1, e1, n1] = ranges[i];
    if (e0 > b1) {
      return InvalidArgumentError(name_ + ": tensor '" + *n0 + "' (data bytes " +
                                  std::to_string(b0 - data_offset_) + ".." +
                                  std::to_string(e0 - data_offset_) + ") overlaps tensor '" + *n1 +
                                  "' (from byte " + std::to_string(b1 - data_offset_) +
                                  "); the file is corrupt");
    }
  }
  for (size_t i = 0; i < tensors_.size(); ++i) tensor_index_.emplace(tensors_[i].name, i);
  return Status::Ok();
}

const TensorInfo* SafetensorsFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

StatusOr<Tensor> SafetensorsFile::GetTensor(std::string_view name) const {
  const TensorInfo* info = FindTensor(name);
  if (info == nullptr) {
    for (const SkippedTensor& t : skipped_) {
      if (t.name == name) {
        return UnimplementedError(name_ + ": tensor '" + t.name + "' has " +
                                  std::to_string(t.dims.size()) +
                                  " dimensions; muninn reads tensors of at most " +
                                  std::to_string(kMaxDims));
      }
    }
    return NotFoundError(name_ + ": no tensor named '" + std::string(name) + "'");
  }
  return GetTensor(*info);
}

StatusOr<Tensor> SafetensorsFile::GetTensor(const TensorInfo& info) const {
  if (!info.dtype) {
    return UnimplementedError(name_ + ": tensor '" + info.name + "' has dtype " + info.type_name +
                              "; muninn reads safetensors weights stored as f32, f16 or bf16 "
                              "(convert the checkpoint, e.g. with torch, to one of those)");
  }
  return internal::MakeTensorView(buffer_, info, name_);
}

}  // namespace muninn::model
