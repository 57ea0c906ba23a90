#include "muninn/model/gguf_file.h"

#include <algorithm>

#include "byte_reader.h"
#include "tensor_view.h"
#include "muninn/core/mapped_file.h"
#include "muninn/model/gguf_format.h"

namespace muninn::model {
namespace {

using internal::ByteReader;

// Smallest number of bytes one item can occupy on disk; used to cap declared counts by the bytes
// that remain, so that no allocation is sized by an unchecked count.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;                   // empty key, type, one-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;   // empty name, n_dims, 1 dim, type, off

uint64_t MinElementBytes(MetadataType t) {
  if (t == MetadataType::kString) return 8;       // u64 length, empty string
  if (t == MetadataType::kArray) return 4 + 8;    // element type + count, empty array
  return MetadataScalarSize(t);
}

Status ParseValue(ByteReader& r, MetadataType type, int depth, const std::string& key,
                  MetadataValue* out);

Status ParseScalar(ByteReader& r, MetadataType type, const std::string& key, MetadataValue* out) {
  const std::string what = "value of '" + key + "'";
  switch (type) {
    case MetadataType::kU8: { uint8_t v; RETURN_IF_ERROR(r.Read(what, &v)); *out = MetadataValue::U8(v); break; }
    case MetadataType::kI8: { int8_t v; RETURN_IF_ERROR(r.Read(what, &v)); *out = MetadataValue::I8(v); break; }
    case MetadataType::kU16: { uint16_t v; RETURN_IF_ERROR(r.Read(what, &v)); *out = MetadataValue::U16(v); break; }
    case MetadataType::kI16: { int16_t v; RETURN_IF_ERROR(r.Read(what, &v)); *out = MetadataValue::I16(v); break; }
    case MetadataType::kU32: { uint32_t v; RETURN_IF_ERROR(r.Read(what, &v)); *out = MetadataValue::U32(v); break; }
    case MetadataType::kI32: { int32_t v; RETURN_IF_ERROR(r.Read(what, &v)); *out = MetadataValue::I32(v); break; }
    case MetadataType::kU64: { uint64_t v; RETURN_IF_ERROR(r.Read(what, &v)); *out = MetadataValue::U64(v); break; }
    case MetadataType::kI64: { int64_t v; RETURN_IF_ERROR(r.Read(what, &v)); *out = MetadataValue::I64(v); break; }
    case MetadataType::kF32: { float v; RETURN_IF_ERROR(r.Read(what, &v)); *out = MetadataValue::F32(v); break; }
    case MetadataType::kF64: { double v; RETURN_IF_ERROR(r.Read(what, &v)); *out = MetadataValue::F64(v); break; }
    case MetadataType::kBool: {
      uint8_t v;
      RETURN_IF_ERROR(r.Read(what, &v));
      if (v > 1) return r.Error(what, "bool byte is " + std::to_string(v) + ", expected 0 or 1");
      *out = MetadataValue::Bool(v != 0);
      break;
    }
    case MetadataType::kString: {
      std::string s;
      RETURN_IF_ERROR(r.ReadString(what, r.remaining(), &s));
      *out = MetadataValue::String(std::move(s));
      break;
    }
    case MetadataType::kArray:
      MUNINN_CHECK(false) << "arrays are parsed by ParseValue";
  }
  return Status::Ok();
}

Status ParseArray(ByteReader& r, int depth, const std::string& key, MetadataValue* out) {
  const std::string what = "array '" + key + "'";
  if (depth >= GgufFile::kMaxArrayDepth) {
    return r.Error(what, "arrays are nested deeper than " +
                             std::to_string(GgufFile::kMaxArrayDepth) + " levels");
  }
  uint32_t elem_id = 0;
  RETURN_IF_ERROR(r.Read(what + " element type", &elem_id));
  if (!IsValidMetadataType(elem_id)) {
    return r.Error(what, "unknown element type id " + std::to_string(elem_id));
  }
  const auto elem = static_cast<MetadataType>(elem_id);
  uint64_t count = 0;
  RETURN_IF_ERROR(r.Read(what + " count", &count));
  if (count > r.remaining() / MinElementBytes(elem)) {
    return r.Error(what, "declares " + std::to_string(count) + " elements of type " +
                             std::string(MetadataTypeName(elem)) + " but only " +
                             std::to_string(r.remaining()) + " bytes remain");
  }
  const size_t n = static_cast<size_t>(count);
  if (elem == MetadataType::kString) {
    std::vector<std::string> strings(n);
    for (size_t i = 0; i < n; ++i) {
      RETURN_IF_ERROR(r.ReadString(what + " element " + std::to_string(i), r.remaining(),
                                   &strings[i]));
    }
    *out = MetadataValue::StringArray(std::move(strings));
  } else if (elem == MetadataType::kArray) {
    std::vector<MetadataValue> arrays(n);
    for (size_t i = 0; i < n; ++i) {
      RETURN_IF_ERROR(ParseValue(r, MetadataType::kArray, depth + 1, key, &arrays[i]));
    }
    *out = MetadataValue::ArrayOfArrays(std::move(arrays));
  } else {
    std::span<const uint8_t> raw;
    RETURN_IF_ERROR(r.ReadBytes(what + " elements", count * MetadataScalarSize(elem), &raw));
    if (elem == MetadataType::kBool) {
      for (size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] > 1) {
          return r.Error(what, "bool element " + std::to_string(i) + " is " +
                                   std::to_string(raw[i]) + ", expected 0 or 1");
        }
      }
    }
    *out = MetadataValue::ScalarArray(elem, std::vector<uint8_t>(raw.begin(), raw.end()));
  }
  return Status::Ok();
}

Status ParseValue(ByteReader& r, MetadataType type, int depth, const std::string& key,
                  MetadataValue* out) {
  if (type == MetadataType::kArray) return ParseArray(r, depth, key, out);
  return ParseScalar(r, type, key, out);
}

}  // namespace

StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapped, MappedFile::Open(path));
  std::shared_ptr<const MappedFile> shared(std::move(mapped));
  const std::span<const uint8_t> bytes = shared->bytes();
  return Parse(bytes, std::move(shared), path);
}

StatusOr<std::unique_ptr<GgufFile>> GgufFile::Parse(std::span<const uint8_t> bytes,
                                                    std::shared_ptr<const void> keep_alive,
                                                    std::string name) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->name_ = std::move(name);
  file->bytes_ = bytes;
  // Read-only bytes wrapped as a Buffer so tensors can view them; see the class comment.
  file->buffer_ = WrapHostMemory(const_cast<uint8_t*>(bytes.data()), bytes.size(),
                                 std::move(keep_alive));
  RETURN_IF_ERROR(file->ParseAll());
  return file;
}

Status GgufFile::ParseAll() {
  ByteReader r(bytes_, name_);
  uint32_t magic = 0;
  if (!r.Read("magic", &magic).ok() || magic != kGgufMagic) {
    return InvalidArgumentError(name_ + ": not a GGUF file (it does not start with the bytes "
                                "'GGUF'); pass a .gguf model or a Hugging Face folder");
  }
  RETURN_IF_ERROR(r.Read("version", &version_));
  if (version_ == 1) {
    return UnimplementedError(name_ + ": GGUF version 1 (32-bit counts, 2023) is not supported; "
                              "re-convert the model with a current llama.cpp");
  }
  if (version_ == 0x02000000u || version_ == 0x03000000u) {
    return UnimplementedError(name_ + ": this is a big-endian GGUF file; muninn reads only "
                              "little-endian GGUF");
  }
  if (version_ != 2 && version_ != 3) {
    return UnimplementedError(name_ + ": unsupported GGUF version " + std::to_string(version_) +
                              "; muninn reads versions 2 and 3");
  }
  uint64_t tensor_count = 0;
  uint64_t kv_count = 0;
  RETURN_IF_ERROR(r.Read("tensor count", &tensor_count));
  RETURN_IF_ERROR(r.Read("metadata count", &kv_count));
  if (kv_count > r.remaining() / kMinKvBytes) {
    return r.Error("metadata count", std::to_string(kv_count) + " key/value pairs cannot fit in " +
                                         std::to_string(r.remaining()) + " remaining bytes");
  }
  if (tensor_count > r.remaining() / kMinTensorInfoBytes) {
    return r.Error("tensor count", std::to_string(tensor_count) + " tensors cannot fit in " +
                                       std::to_string(r.remaining()) + " remaining bytes");
  }

  // ---- metadata ----
  metadata_.reserve(static_cast<size_t>(kv_count));
  for (uint64_t i = 0; i < kv_count; ++i) {
    MetadataEntry e;
    RETURN_IF_ERROR(r.ReadString("metadata key " + std::to_string(i), kMaxKeyLength, &e.key));
    if (e.key.empty()) return r.Error("metadata key " + std::to_string(i), "the key is empty");
    uint32_t type_id = 0;
    RETURN_IF_ERROR(r.Read("type of '" + e.key + "'", &type_id));
    if (!IsValidMetadataType(type_id)) {
      return r.Error("type of '" + e.key + "'", "unknown value type id " + std::to_string(type_id));
    }
    RETURN_IF_ERROR(ParseValue(r, static_cast<MetadataType>(type_id), 0, e.key, &e.value));
    if (!metadata_index_.emplace(e.key, metadata_.size()).second) {
      return r.Error("metadata", "duplicate key '" + e.key + "'");
    }
    metadata_.push_back(std::move(e));
  }

  alignment_ = kGgufDefaultAlignment;
  if (const MetadataValue* a = FindMetadata("general.alignment")) {
    StatusOr<uint64_t> v = a->AsUint();
    if (!v.ok() || *v == 0 || *v > kMaxAlignment || (*v & (*v - 1)) != 0) {
      return InvalidArgumentError(name_ + ": general.alignment is " + a->ToString() + " (" +
                                  a->TypeName() + "); it must be a power of two up to " +
                                  std::to_string(kMaxAlignment));
    }
    alignment_ = static_cast<uint32_t>(*v);
  }

  // ---- tensor infos ----
  tensors_.reserve(static_cast<size_t>(tensor_count));
  std::vector<uint64_t> relative_offsets;
  relative_offsets.reserve(static_cast<size_t>(tensor_count));
  for (uint64_t i = 0; i < tensor_count; ++i) {
    TensorInfo t;
    RETURN_IF_ERROR(
        r.ReadString("name of tensor " + std::to_string(i), kGgufMaxTensorName, &t.name));
    const std::string what = "tensor '" + t.name + "'";
    uint32_t n_dims = 0;
    RETURN_IF_ERROR(r.Read(what + " dimension count", &n_dims));
    if (n_dims < 1 || n_dims > static_cast<uint32_t>(kGgufMaxDims)) {
      return r.Error(what, "has " + std::to_string(n_dims) + " dimensions; GGUF allows 1 to " +
                               std::to_string(kGgufMaxDims));
    }
    uint64_t ne[kGgufMaxDims] = {1, 1, 1, 1};
    for (uint32_t d = 0; d < n_dims; ++d) {
      RETURN_IF_ERROR(r.Read(what + " dimension", &ne[d]));
      if (ne[d] > static_cast<uint64_t>(INT64_MAX)) {
        return r.Error(what, "dimension " + std::to_string(d) + " is " + std::to_string(ne[d]) +
                                 ", beyond the signed 64-bit range");
      }
    }
    uint32_t type_id = 0;
    RETURN_IF_ERROR(r.Read(what + " type", &type_id));
    const GgufTypeInfo* type = FindGgufType(type_id);
    if (type == nullptr) {
      return r.Error(what, "unknown ggml tensor type id " + std::to_string(type_id) +
                               " (a removed type, or newer than this build)");
    }
    uint64_t offset = 0;
    RETURN_IF_ERROR(r.Read(what + " offset", &offset));

    // Element count and byte size, overflow-checked.
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      if (__builtin_mul_overflow(numel, static_cast<int64_t>(ne[d]), &numel)) {
        return r.Error(what, "the element count overflows 64 bits");
      }
    }
    if (static_cast<int64_t>(ne[0]) % type->block_size != 0) {
      return r.Error(what, "innermost dimension " + std::to_string(ne[0]) +
                               " is not a multiple of the " + std::string(type->name) +
                               " block size " + std::to_string(type->block_size));
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(numel / type->block_size), type->type_size,
                               &nbytes)) {
      return r.Error(what, "the byte size overflows 64 bits");
    }
    if (offset % alignment_ != 0) {
      return r.Error(what, "data offset " + std::to_string(offset) +
                               " is not a multiple of the alignment " +
                               std::to_string(alignment_));
    }
    int64_t dims[kGgufMaxDims];
    for (uint32_t d = 0; d < n_dims; ++d) dims[d] = static_cast<int64_t>(ne[n_dims - 1 - d]);
    t.shape = Shape(std::span<const int64_t>(dims, n_dims));
    t.type_name = std::string(type->name);
    t.dtype = type->dtype;
    t.nbytes = nbytes;
    if (!tensor_index_.emplace(t.name, tensors_.size()).second) {
      return r.Error("tensor infos", "duplicate tensor name '" + t.name + "'");
    }
    relative_offsets.push_back(offset);
    tensors_.push_back(std::move(t));
  }

  // ---- data section ----
  const uint64_t header_end = r.position();
  const uint64_t pad = (alignment_ - header_end % alignment_) % alignment_;
  if (__builtin_add_overflow(header_end, pad, &data_offset_)) {
    return InvalidArgumentError(name_ + ": the data section offset overflows");
  }
  if (!tensors_.empty() && data_offset_ > bytes_.size()) {
    return InvalidArgumentError(name_ + ": the data section would start at byte " +
                                std::to_string(data_offset_) + " but the file has only " +
                                std::to_string(bytes_.size()) + " bytes; it is truncated");
  }
  const uint64_t data_size = tensors_.empty() ? 0 : bytes_.size() - data_offset_;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    TensorInfo& t = tensors_[i];
    uint64_t end = 0;
    if (__builtin_add_overflow(relative_offsets[i], t.nbytes, &end) || end > data_size) {
      return InvalidArgumentError(
          name_ + ": tensor '" + t.name + "' (" + t.type_name + " " + t.shape.ToString() +
          ", " + std::to_string(t.nbytes) + " bytes at data offset " +
          std::to_string(relative_offsets[i]) + ") extends past the end of the data section (" +
          std::to_string(data_size) + " bytes); the file is truncated or corrupt");
    }
    t.offset = data_offset_ + relative_offsets[i];
  }
  // Two tensors whose bytes overlap mean a tensor's type or shape was changed (its data now runs
  // into the next one): the file would load and produce garbage. Sorted by start, each tensor
  // must end at or before the next one begins (empty tensors take no bytes).
  std::vector<size_t> order;
  order.reserve(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (tensors_[i].nbytes > 0) order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return relative_offsets[a] != relative_offsets[b] ? relative_offsets[a] < relative_offsets[b]
                                                      : a < b;
  });
  for (size_t k = 1; k < order.size(); ++k) {
    const TensorInfo& prev = tensors_[order[k - 1]];
    const TensorInfo& next = tensors_[order[k]];
    const uint64_t prev_end = relative_offsets[order[k - 1]] + prev.nbytes;  // checked above
    if (prev_end > relative_offsets[order[k]]) {
      return InvalidArgumentError(
          name_ + ": tensor '" + prev.name + "' (" + prev.type_name + " " + prev.shape.ToString() +
          ", bytes " + std::to_string(relative_offsets[order[k - 1]]) + ".." +
          std::to_string(prev_end) + " of the data section) overlaps tensor '" + next.name +
          "' (from byte " + std::to_string(relative_offsets[order[k]]) +
          "); a tensor's type or shape does not match its data: the file is corrupt");
    }
  }
  return Status::Ok();
}

const MetadataValue* GgufFile::FindMetadata(std::string_view key) const {
  auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].value;
}

const TensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

StatusOr<Tensor> GgufFile::GetTensor(std::string_view name) const {
  const TensorInfo* info = FindTensor(name);
  if (info == nullptr) {
    return NotFoundError(name_ + ": no tensor named '" + std::string(name) + "'");
  }
  return GetTensor(*info);
}

StatusOr<Tensor> GgufFile::GetTensor(const TensorInfo& info) const {
  return internal::MakeTensorView(buffer_, info, name_);
}

}  // namespace muninn::model
