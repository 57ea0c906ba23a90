// SafetensorsWriter: builds a .safetensors file (format: safetensors_file.h), used by tests and
// tools. Tensors are laid out in the order added; the JSON header is padded with spaces so the
// data section starts 8-byte aligned (as the reference implementation does). Not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/core/tensor.h"

namespace muninn::model {

class SafetensorsWriter {
 public:
  // A "__metadata__" entry (string values only, per the format).
  void SetMetadata(const std::string& key, const std::string& value);
  // A host tensor of dtype f32, f16 or bf16 (strided views are packed first).
  Status AddTensor(const std::string& name, const Tensor& tensor);
  // Raw bytes under any safetensors dtype string ("I64", "U8", ...); `dims` outermost first.
  // The bytes are not checked against dtype and dims (the reader does that), so tests can write
  // unsupported dtypes and inconsistent entries.
  Status AddRawTensor(const std::string& name, const std::string& dtype,
                      std::vector<int64_t> dims, std::vector<uint8_t> data);

  StatusOr<std::vector<uint8_t>> Serialize() const;
  Status WriteFile(const std::string& path) const;

 private:
  struct PendingTensor {
    std::string name;
    std::string dtype;
    std::vector<int64_t> dims;
    std::vector<uint8_t> data;
  };
  std::vector<std::pair<std::string, std::string>> metadata_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace muninn::model
