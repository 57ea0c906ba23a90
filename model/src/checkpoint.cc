#include "muninn/model/checkpoint.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>

#include "checkpoint_impl.h"
#include "muninn/model/gguf_format.h"

namespace muninn::model {

std::string_view CheckpointFormatName(CheckpointFormat format) {
  return format == CheckpointFormat::kGguf ? "gguf" : "huggingface";
}

StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoError("cannot open model '" + path + "'", errno);
  if (S_ISDIR(st.st_mode)) return internal::OpenHfCheckpoint(path);
  // A file: GGUF by magic, otherwise safetensors.
  uint32_t magic = 0;
  if (std::FILE* f = std::fopen(path.c_str(), "rb")) {
    const size_t got = std::fread(&magic, 1, 4, f);
    std::fclose(f);
    if (got == 4 && magic == kGgufMagic) return internal::OpenGgufCheckpoint(path);
  }
  auto ends_with = [&path](std::string_view suffix) {
    return path.size() >= suffix.size() &&
           path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with(".gguf")) return internal::OpenGgufCheckpoint(path);  // reports the bad magic
  if (ends_with(".safetensors")) {
    return internal::OpenHfCheckpoint(path);
  }
  return InvalidArgumentError("'" + path + "' is neither a GGUF file, a .safetensors file nor a "
                              "Hugging Face model folder");
}

StatusOr<const MetadataValue*> Checkpoint::Require(std::string_view key) const {
  const MetadataValue* v = FindMetadata(key);
  if (v == nullptr) {
    return NotFoundError(path() + ": metadata key '" + std::string(key) + "' is missing");
  }
  return v;
}

namespace {
template <typename T>
StatusOr<T> WithKey(StatusOr<T> v, std::string_view key, const std::string& path) {
  if (v.ok()) return v;
  return v.status().WithContext(path + ": metadata key '" + std::string(key) + "'");
}
}  // namespace

StatusOr<int64_t> Checkpoint::GetInt(std::string_view key) const {
  ASSIGN_OR_RETURN(const MetadataValue* v, Require(key));
  return WithKey(v->AsInt(), key, path());
}

StatusOr<double> Checkpoint::GetFloat(std::string_view key) const {
  ASSIGN_OR_RETURN(const MetadataValue* v, Require(key));
  return WithKey(v->AsFloat(), key, path());
}

StatusOr<bool> Checkpoint::GetBool(std::string_view key) const {
  ASSIGN_OR_RETURN(const MetadataValue* v, Require(key));
  return WithKey(v->AsBool(), key, path());
}

StatusOr<std::string> Checkpoint::GetString(std::string_view key) const {
  ASSIGN_OR_RETURN(const MetadataValue* v, Require(key));
  ASSIGN_OR_RETURN(std::string_view s, WithKey(v->AsString(), key, path()));
  return std::string(s);
}

StatusOr<int64_t> Checkpoint::GetIntOr(std::string_view key, int64_t fallback) const {
  if (FindMetadata(key) == nullptr) return fallback;
  return GetInt(key);
}

StatusOr<double> Checkpoint::GetFloatOr(std::string_view key, double fallback) const {
  if (FindMetadata(key) == nullptr) return fallback;
  return GetFloat(key);
}

StatusOr<bool> Checkpoint::GetBoolOr(std::string_view key, bool fallback) const {
  if (FindMetadata(key) == nullptr) return fallback;
  return GetBool(key);
}

StatusOr<std::string> Checkpoint::GetStringOr(std::string_view key, std::string fallback) const {
  if (FindMetadata(key) == nullptr) return fallback;
  return GetString(key);
}

StatusOr<Tensor> Checkpoint::GetTensor(std::string_view name) const {
  const TensorInfo* info = FindTensor(name);
  if (info == nullptr) {
    return NotFoundError(path() + ": tensor '" + std::string(name) + "' is missing");
  }
  return GetTensor(*info);
}

Status Checkpoint::CheckTensor(std::string_view name, const Shape& expected) const {
  const TensorInfo* info = FindTensor(name);
  if (info == nullptr) {
    return NotFoundError(path() + ": tensor '" + std::string(name) + "' is missing");
  }
  if (!(info->shape == expected)) {
    return InvalidArgumentError(path() + ": tensor '" + std::string(name) + "' has shape " +
                                info->shape.ToString() + ", expected " + expected.ToString());
  }
  if (!info->dtype) {
    return UnimplementedError(path() + ": tensor '" + std::string(name) + "' has type " +
                              info->type_name + ", which muninn cannot compute with");
  }
  return Status::Ok();
}

StatusOr<Tensor> Checkpoint::GetTensor(std::string_view name, const Shape& expected) const {
  RETURN_IF_ERROR(CheckTensor(name, expected));
  return GetTensor(*FindTensor(name));
}

}  // namespace muninn::model
