// TensorInfo: what a checkpoint says about one stored tensor, before any byte of it is read.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "muninn/core/dtype.h"
#include "muninn/core/tensor.h"

namespace muninn::model {

struct TensorInfo {
  std::string name;
  // The file format's own type name, lower-case ggml/muninn spelling ("q4_1", "iq2_xxs", "f32",
  // "i64", "f8_e4m3"); always set, also for types muninn cannot compute with.
  std::string type_name;
  // The muninn dtype, or nullopt when muninn has no kernels for the stored type (reading such a
  // tensor fails with Unimplemented naming `type_name`).
  std::optional<DType> dtype;
  // Outermost first (muninn order; GGUF's innermost-first ne is reversed on reading).
  Shape shape;
  uint64_t offset = 0;      // absolute byte offset of the first byte in its file
  uint64_t nbytes = 0;      // bytes the tensor occupies
  uint32_t file_index = 0;  // which file of a sharded checkpoint holds it (0 for single files)
};

}  // namespace muninn::model
