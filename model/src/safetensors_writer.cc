#include "muninn/model/safetensors_writer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

namespace muninn::model {

void SafetensorsWriter::SetMetadata(const std::string& key, const std::string& value) {
  for (auto& [k, v] : metadata_) {
    if (k == key) {
      v = value;
      return;
    }
  }
  metadata_.emplace_back(key, value);
}

Status SafetensorsWriter::AddTensor(const std::string& name, const Tensor& tensor) {
  if (!tensor.defined() || !tensor.device().is_cpu()) {
    return InvalidArgumentError("SafetensorsWriter: tensor '" + name + "' is not a host tensor");
  }
  std::string dtype;
  switch (tensor.dtype()) {
    case DType::kF32: dtype = "F32"; break;
    case DType::kF16: dtype = "F16"; break;
    case DType::kBF16: dtype = "BF16"; break;
    default:
      return InvalidArgumentError("SafetensorsWriter: tensor '" + name + "' has dtype " +
                                  std::string(DTypeName(tensor.dtype())) +
                                  "; only f32, f16 and bf16 are written");
  }
  Tensor packed = tensor;
  if (!tensor.is_contiguous()) {
    ASSIGN_OR_RETURN(packed, tensor.Contiguous());
  }
  const auto* p = static_cast<const uint8_t*>(packed.data());
  const auto dims = tensor.shape().dims();
  return AddRawTensor(name, dtype, std::vector<int64_t>(dims.begin(), dims.end()),
                      std::vector<uint8_t>(p, p + packed.nbytes()));
}

Status SafetensorsWriter::AddRawTensor(const std::string& name, const std::string& dtype,
                                       std::vector<int64_t> dims, std::vector<uint8_t> data) {
  if (name == "__metadata__") {
    return InvalidArgumentError("SafetensorsWriter: '__metadata__' is not a tensor name");
  }
  for (const PendingTensor& t : tensors_) {
    if (t.name == name) {
      return AlreadyExistsError("SafetensorsWriter: duplicate tensor '" + name + "'");
    }
  }
  for (int64_t d : dims) {
    if (d < 0) return InvalidArgumentError("SafetensorsWriter: negative dim in '" + name + "'");
  }
  tensors_.push_back({name, dtype, std::move(dims), std::move(data)});
  return Status::Ok();
}

StatusOr<std::vector<uint8_t>> SafetensorsWriter::Serialize() const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors_) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.dims},
                      {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const std::exception& e) {  // invalid UTF-8 in a name
    return InvalidArgumentError(std::string("SafetensorsWriter: cannot encode header: ") +
                                e.what());
  }
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  std::vector<uint8_t> out(8);
  const uint64_t len = text.size();
  std::memcpy(out.data(), &len, 8);
  out.insert(out.end(), text.begin(), text.end());
  for (const PendingTensor& t : tensors_) out.insert(out.end(), t.data.begin(), t.data.end());
  return out;
}

Status SafetensorsWriter::WriteFile(const std::string& path) const {
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, Serialize());
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return ErrnoError("cannot create '" + path + "'", errno);
  const size_t written = std::fwrite(bytes.data(), 1, bytes.size(), f);
  const int err = errno;
  if (std::fclose(f) != 0 || written != bytes.size()) {
    return ErrnoError("cannot write '" + path + "'", err);
  }
  return Status::Ok();
}

}  // namespace muninn::model
