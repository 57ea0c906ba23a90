// SafetensorsFile: one parsed Hugging Face .safetensors file whose tensors are zero-copy views.
//
// Format: u64 little-endian header length N | N bytes of UTF-8 JSON | data. The JSON object maps
// each tensor name to {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]} (offsets
// relative to the first data byte) and may hold "__metadata__": {string: string}. Shapes are
// outermost first, the same order as muninn's.
//
// Parsing treats the file as untrusted: N is checked against the file size and a 100 MB cap, the
// JSON must be an object nested at most kMaxJsonDepth deep with no duplicate keys, every field
// must have the right JSON type, dims must be non-negative integers (at most 4 of them), offsets
// must satisfy begin <= end <= data size and end - begin must equal the byte size implied by
// dtype and shape (computed overflow-safe). Errors are InvalidArgument naming the file and tensor.
// Stored dtypes F32, F16 and BF16 map to muninn dtypes; other known dtypes (I64, U8, F8_E4M3, ...)
// parse but fail when read, with Unimplemented; unknown dtype strings are errors.
//
// Tensors share ownership of the mapping and are READ-ONLY (PROT_READ). Immutable after
// Open/Parse; thread-safe for concurrent reads.
#pragma once

#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/buffer.h"
#include "muninn/core/status.h"
#include "muninn/core/tensor.h"
#include "muninn/model/tensor_info.h"

namespace muninn::model {

class SafetensorsFile {
 public:
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;
  static constexpr int kMaxJsonDepth = 16;

  static StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Parses `bytes`, which must outlive `keep_alive` (may be null when the caller guarantees the
  // lifetime otherwise) and every returned tensor. `name` appears in errors.
  static StatusOr<std::unique_ptr<SafetensorsFile>> Parse(std::span<const uint8_t> bytes,
                                                         std::shared_ptr<const void> keep_alive,
                                                         std::string name = "<memory>");

  const std::string& name() const { return name_; }
  uint64_t file_size() const { return bytes_.size(); }
  uint64_t data_offset() const { return data_offset_; }

  // "__metadata__" (string values only, as the format requires).
  const std::map<std::string, std::string, std::less<>>& metadata() const { return metadata_; }

  // Tensors sorted by data offset; offsets are absolute.
  std::span<const TensorInfo> tensors() const { return tensors_; }
  const TensorInfo* FindTensor(std::string_view name) const;

  // Tensors of more than kMaxDims (4) dimensions, which muninn's Tensor cannot hold: their byte
  // ranges are checked like every other's, but they are not in tensors() and GetTensor fails
  // with Unimplemented for them. Official Huginn checkpoints carry one, the persistent RoPE
  // buffer `freqs_cis` [1, block_size, 1, head_dim/2, 2], which muninn recomputes.
  struct SkippedTensor {
    std::string name;
    std::string type_name;      // lower-case, as TensorInfo::type_name
    std::vector<int64_t> dims;  // outermost first
    uint64_t offset = 0;        // absolute
    uint64_t nbytes = 0;
  };
  static constexpr int kMaxHeaderDims = 8;  // more dimensions than this is a malformed header
  std::span<const SkippedTensor> skipped_tensors() const { return skipped_; }

  // NotFound if absent, Unimplemented for dtypes other than F32/F16/BF16 and for skipped
  // (over-4-dimensional) tensors.
  StatusOr<Tensor> GetTensor(std::string_view name) const;
  StatusOr<Tensor> GetTensor(const TensorInfo& info) const;

 private:
  SafetensorsFile() = default;
  Status ParseAll();

  std::string name_;
  std::span<const uint8_t> bytes_;
  std::shared_ptr<Buffer> buffer_;
  uint64_t data_offset_ = 0;
  std::map<std::string, std::string, std::less<>> metadata_;
  std::vector<TensorInfo> tensors_;
  std::vector<SkippedTensor> skipped_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace muninn::model
