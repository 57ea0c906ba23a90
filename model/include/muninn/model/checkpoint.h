// Checkpoint: one uniform read-only view over a model's weights and metadata, whatever the file
// format: a GGUF file, or a Hugging Face folder (config.json + model.safetensors, or shards
// model-0000i-of-0000n.safetensors listed in model.safetensors.index.json).
//
// Metadata: GGUF key/values as stored ("llama.block_count"); for Hugging Face folders the
// entries of config.json, nested objects flattened with dots ("rope_scaling.factor"), JSON
// integers as i64, reals as f64, homogeneous arrays as arrays, nulls and arrays of objects
// dropped. Typed getters fail with NotFound naming the key and the file when a key is absent, and
// with InvalidArgument naming key, actual and expected type when it has the wrong type.
//
// Tensors: names as the format stores them (GGUF "blk.3.attn_q.weight", HF
// "model.layers.3.self_attn.q_proj.weight"), shapes outermost first. Views share ownership of the
// mapped files and are read-only. How names map to model roles, and how each format's Q/K rows
// relate to RoPE, is model_hparams.h's business.
//
// Implementations are immutable after Open; all methods are safe to call concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "muninn/core/status.h"
#include "muninn/core/tensor.h"
#include "muninn/model/metadata_value.h"
#include "muninn/model/tensor_info.h"

namespace muninn::model {

enum class CheckpointFormat : uint8_t { kGguf, kHuggingFace };
std::string_view CheckpointFormatName(CheckpointFormat format);  // "gguf", "huggingface"

class Checkpoint {
 public:
  virtual ~Checkpoint() = default;

  // Opens `path`: a .gguf file (recognised by its magic), a folder holding config.json and
  // safetensors weights, or a single .safetensors file with config.json beside it.
  static StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& path);

  virtual CheckpointFormat format() const = 0;
  virtual const std::string& path() const = 0;
  // GGUF general.architecture or config.json model_type ("llama", "bert"); empty if absent.
  virtual std::string architecture() const = 0;
  // Total bytes of the weight files (every shard).
  virtual uint64_t file_size() const = 0;
  // Number of weight files (shards); 1 for GGUF.
  virtual size_t file_count() const = 0;

  virtual std::span<const MetadataEntry> metadata() const = 0;
  virtual const MetadataValue* FindMetadata(std::string_view key) const = 0;
  virtual std::span<const TensorInfo> tensors() const = 0;
  virtual const TensorInfo* FindTensor(std::string_view name) const = 0;
  // A view of a tensor listed by tensors(); Unimplemented for types muninn cannot compute with.
  virtual StatusOr<Tensor> GetTensor(const TensorInfo& info) const = 0;

  // ---- typed metadata getters ----
  StatusOr<int64_t> GetInt(std::string_view key) const;
  StatusOr<double> GetFloat(std::string_view key) const;  // also accepts integers
  StatusOr<bool> GetBool(std::string_view key) const;
  StatusOr<std::string> GetString(std::string_view key) const;
  // Same, but `fallback` when the key is absent (a present key of the wrong type is an error).
  StatusOr<int64_t> GetIntOr(std::string_view key, int64_t fallback) const;
  StatusOr<double> GetFloatOr(std::string_view key, double fallback) const;
  StatusOr<bool> GetBoolOr(std::string_view key, bool fallback) const;
  StatusOr<std::string> GetStringOr(std::string_view key, std::string fallback) const;

  // ---- tensor lookup ----
  // NotFound naming the tensor and the checkpoint when absent.
  StatusOr<Tensor> GetTensor(std::string_view name) const;
  // Checks without reading any byte that the tensor exists, has exactly `expected` shape and a
  // dtype muninn can compute with: "tensor 'blk.3.attn_q.weight' has shape [576, 576],
  // expected [576, 192]".
  Status CheckTensor(std::string_view name, const Shape& expected) const;
  // CheckTensor, then the view.
  StatusOr<Tensor> GetTensor(std::string_view name, const Shape& expected) const;

 private:
  StatusOr<const MetadataValue*> Require(std::string_view key) const;
};

}  // namespace muninn::model
