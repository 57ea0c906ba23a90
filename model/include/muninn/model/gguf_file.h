// GgufFile: a parsed GGUF checkpoint (format: gguf_format.h) whose tensors are zero-copy views
// of the file's bytes.
//
// Parsing treats the file as untrusted. Every length, count and offset is checked against the
// bytes actually present with overflow-safe arithmetic before anything is allocated or read:
// counts are capped by what the remaining bytes could hold, strings and arrays by the remaining
// bytes, array nesting by kMaxArrayDepth, dims by kGgufMaxDims; tensor element counts and byte
// sizes must not overflow, the innermost dim must be a multiple of the type's block size, offsets
// must be aligned and every tensor must lie inside the data section. Duplicate keys and tensor
// names are errors. A malformed file yields InvalidArgument naming the byte offset; an
// unsupported version yields Unimplemented. Tensors of types muninn cannot compute with
// (TensorInfo::dtype empty) parse fine and fail only when read, with Unimplemented.
//
// Tensors returned by GetTensor share ownership of the mapping (it stays alive as long as any
// view does) and are READ-ONLY: the file is mapped PROT_READ, writing through data() faults.
//
// Immutable after Open/Parse; thread-safe for concurrent reads.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/buffer.h"
#include "muninn/core/status.h"
#include "muninn/core/tensor.h"
#include "muninn/model/metadata_value.h"
#include "muninn/model/tensor_info.h"

namespace muninn::model {

class GgufFile {
 public:
  static constexpr int kMaxArrayDepth = 4;           // arrays of arrays of ... (huggingface.js: 4)
  static constexpr uint64_t kMaxKeyLength = 65535;   // bytes, per the GGUF specification
  static constexpr uint64_t kMaxAlignment = 1u << 24;

  // Maps `path` and parses it.
  static StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses `bytes`, which must stay valid while `keep_alive` (may be null when the caller
  // guarantees the lifetime otherwise) or any returned tensor lives. `name` appears in errors.
  static StatusOr<std::unique_ptr<GgufFile>> Parse(std::span<const uint8_t> bytes,
                                                  std::shared_ptr<const void> keep_alive,
                                                  std::string name = "<memory>");

  const std::string& name() const { return name_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t file_size() const { return bytes_.size(); }
  uint64_t data_offset() const { return data_offset_; }  // absolute start of the data section

  // All key/value pairs in file order.
  std::span<const MetadataEntry> metadata() const { return metadata_; }
  const MetadataValue* FindMetadata(std::string_view key) const;

  // All tensors in file order; offsets are absolute.
  std::span<const TensorInfo> tensors() const { return tensors_; }
  const TensorInfo* FindTensor(std::string_view name) const;

  // A view of the named tensor. NotFound if absent, Unimplemented if its type has no muninn
  // dtype. A tensor whose bytes are not aligned for its element type (possible only with a tiny
  // general.alignment) is copied into an aligned buffer instead of viewed.
  StatusOr<Tensor> GetTensor(std::string_view name) const;
  StatusOr<Tensor> GetTensor(const TensorInfo& info) const;

 private:
  GgufFile() = default;
  Status ParseAll();

  std::string name_;
  std::span<const uint8_t> bytes_;
  std::shared_ptr<Buffer> buffer_;  // the whole file, keeping the mapping alive
  uint32_t version_ = 0;
  uint32_t alignment_ = 0;
  uint64_t data_offset_ = 0;
  std::vector<MetadataEntry> metadata_;
  std::map<std::string, size_t, std::less<>> metadata_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace muninn::model
