#include "muninn/model/gguf_writer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "muninn/model/gguf_format.h"

namespace muninn::model {
namespace {

template <typename T>
void Put(std::vector<uint8_t>* out, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little-endian host (see byte_reader.h)
  out->insert(out->end(), b, b + sizeof(T));
}

void PutString(std::vector<uint8_t>* out, std::string_view s) {
  Put<uint64_t>(out, s.size());
  out->insert(out->end(), s.begin(), s.end());
}

void PutValue(std::vector<uint8_t>* out, const MetadataValue& v) {
  switch (v.type()) {
    case MetadataType::kU8: Put(out, static_cast<uint8_t>(*v.AsUint())); break;
    case MetadataType::kI8: Put(out, static_cast<int8_t>(*v.AsInt())); break;
    case MetadataType::kU16: Put(out, static_cast<uint16_t>(*v.AsUint())); break;
    case MetadataType::kI16: Put(out, static_cast<int16_t>(*v.AsInt())); break;
    case MetadataType::kU32: Put(out, static_cast<uint32_t>(*v.AsUint())); break;
    case MetadataType::kI32: Put(out, static_cast<int32_t>(*v.AsInt())); break;
    case MetadataType::kU64: Put(out, *v.AsUint()); break;
    case MetadataType::kI64: Put(out, *v.AsInt()); break;
    case MetadataType::kF32: Put(out, static_cast<float>(*v.AsFloat())); break;
    case MetadataType::kF64: Put(out, *v.AsFloat()); break;
    case MetadataType::kBool: Put<uint8_t>(out, *v.AsBool() ? 1 : 0); break;
    case MetadataType::kString: PutString(out, *v.AsString()); break;
    case MetadataType::kArray: {
      Put(out, static_cast<uint32_t>(v.element_type()));
      Put<uint64_t>(out, v.array_size());
      if (v.element_type() == MetadataType::kString) {
        for (const std::string& s : v.string_elements()) PutString(out, s);
      } else if (v.element_type() == MetadataType::kArray) {
        for (const MetadataValue& inner : v.array_elements()) PutValue(out, inner);
      } else {
        const auto raw = v.raw_elements();
        out->insert(out->end(), raw.begin(), raw.end());
      }
      break;
    }
  }
}

}  // namespace

void GgufWriter::SetMetadata(const std::string& key, MetadataValue value) {
  for (auto& [k, v] : metadata_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(key, std::move(value));
}

Status GgufWriter::AddTensor(const std::string& name, const Tensor& tensor) {
  if (!tensor.defined() || !tensor.device().is_cpu()) {
    return InvalidArgumentError("GgufWriter: tensor '" + name + "' is not a defined host tensor");
  }
  const std::optional<uint32_t> type = GgufTypeForDType(tensor.dtype());
  if (!type) {
    return InvalidArgumentError("GgufWriter: tensor '" + name + "' has dtype " +
                                std::string(DTypeName(tensor.dtype())) +
                                ", which has no GGUF type id");
  }
  Tensor packed = tensor;
  if (!tensor.is_contiguous()) {
    ASSIGN_OR_RETURN(packed, tensor.Contiguous());
  }
  const auto* p = static_cast<const uint8_t*>(packed.data());
  return AddRawTensor(name, *type, tensor.shape(),
                      std::vector<uint8_t>(p, p + packed.nbytes()));
}

Status GgufWriter::AddRawTensor(const std::string& name, uint32_t ggml_type, const Shape& shape,
                                std::vector<uint8_t> data) {
  for (const PendingTensor& t : tensors_) {
    if (t.name == name) return AlreadyExistsError("GgufWriter: duplicate tensor '" + name + "'");
  }
  const GgufTypeInfo* type = FindGgufType(ggml_type);
  if (type == nullptr) {
    return InvalidArgumentError("GgufWriter: unknown ggml type id " + std::to_string(ggml_type));
  }
  if (shape.ndim() < 1 || name.size() > kGgufMaxTensorName) {
    return InvalidArgumentError("GgufWriter: tensor '" + name +
                                "' needs 1 to 4 dims and a name of at most 64 bytes");
  }
  const int64_t inner = shape[shape.ndim() - 1];
  if (inner < 0 || inner % type->block_size != 0) {
    return InvalidArgumentError("GgufWriter: tensor '" + name + "' innermost dim " +
                                std::to_string(inner) + " is not a multiple of the " +
                                std::string(type->name) + " block size");
  }
  uint64_t expected = static_cast<uint64_t>(inner / type->block_size) * type->type_size;
  for (int i = 0; i + 1 < shape.ndim(); ++i) {
    if (shape[i] < 0 ||
        __builtin_mul_overflow(expected, static_cast<uint64_t>(shape[i]), &expected)) {
      return InvalidArgumentError("GgufWriter: tensor '" + name + "' has an invalid shape");
    }
  }
  if (expected != data.size()) {
    return InvalidArgumentError("GgufWriter: tensor '" + name + "' " + shape.ToString() + " " +
                                std::string(type->name) + " needs " + std::to_string(expected) +
                                " bytes, got " + std::to_string(data.size()));
  }
  tensors_.push_back({name, ggml_type, shape, std::move(data)});
  return Status::Ok();
}

StatusOr<std::vector<uint8_t>> GgufWriter::Serialize() const {
  if (version_ != 2 && version_ != 3) {
    return InvalidArgumentError("GgufWriter: version must be 2 or 3");
  }
  if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0) {
    return InvalidArgumentError("GgufWriter: alignment must be a power of two");
  }
  std::vector<std::pair<std::string, MetadataValue>> metadata = metadata_;
  if (alignment_ != kGgufDefaultAlignment) {
    bool found = false;
    for (auto& [k, v] : metadata) {
      if (k == "general.alignment") {
        v = MetadataValue::U32(alignment_);
        found = true;
      }
    }
    if (!found) metadata.emplace_back("general.alignment", MetadataValue::U32(alignment_));
  }
  std::vector<uint8_t> out;
  Put(&out, kGgufMagic);
  Put(&out, version_);
  Put<uint64_t>(&out, tensors_.size());
  Put<uint64_t>(&out, metadata.size());
  for (const auto& [k, v] : metadata) {
    PutString(&out, k);
    Put(&out, static_cast<uint32_t>(v.type()));
    PutValue(&out, v);
  }
  auto padded = [this](uint64_t n) { return (n + alignment_ - 1) / alignment_ * alignment_; };
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors_) {
    PutString(&out, t.name);
    Put(&out, static_cast<uint32_t>(t.shape.ndim()));
    for (int d = t.shape.ndim() - 1; d >= 0; --d) Put(&out, static_cast<uint64_t>(t.shape[d]));
    Put(&out, t.type);
    Put(&out, offset);
    offset = padded(offset + t.data.size());
  }
  out.resize(padded(out.size()), 0);
  for (const PendingTensor& t : tensors_) {
    out.insert(out.end(), t.data.begin(), t.data.end());
    out.resize(padded(out.size()), 0);
  }
  return out;
}

Status GgufWriter::WriteFile(const std::string& path) const {
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
