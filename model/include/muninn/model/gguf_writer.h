// GgufWriter: builds a GGUF file (format: gguf_format.h) in memory or on disk.
//
// Used by tests to make tiny checkpoints and by tools that convert or re-quantize. Metadata keeps
// first-insertion order (setting a key again replaces its value in place); tensors keep the order
// they were added, each padded to the alignment. A non-default alignment is written as the u32
// key general.alignment. Not thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/core/tensor.h"
#include "muninn/model/metadata_value.h"

namespace muninn::model {

class GgufWriter {
 public:
  // `version` 2 or 3 (the layouts are identical for little-endian files); `alignment` a power
  // of two. Checked when serializing.
  explicit GgufWriter(uint32_t version = 3, uint32_t alignment = 32)
      : version_(version), alignment_(alignment) {}

  void SetMetadata(const std::string& key, MetadataValue value);

  // Adds a host tensor (shape outermost first) of any dtype GGUF has an id for; strided views
  // are packed first. AlreadyExists for a repeated name, InvalidArgument otherwise.
  Status AddTensor(const std::string& name, const Tensor& tensor);
  // Adds raw bytes under an explicit ggml type id, for types muninn cannot compute with (and for
  // tests). `shape` is outermost first; `data` must be exactly the tensor's byte size.
  Status AddRawTensor(const std::string& name, uint32_t ggml_type, const Shape& shape,
                      std::vector<uint8_t> data);

  StatusOr<std::vector<uint8_t>> Serialize() const;
  Status WriteFile(const std::string& path) const;

 private:
  struct PendingTensor {
    std::string name;
    uint32_t type;
    Shape shape;
    std::vector<uint8_t> data;
  };
  uint32_t version_;
  uint32_t alignment_;
  std::vector<std::pair<std::string, MetadataValue>> metadata_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace muninn::model
