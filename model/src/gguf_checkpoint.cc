// Checkpoint over one GGUF file.
#include "checkpoint_impl.h"
#include "muninn/model/gguf_file.h"

namespace muninn::model::internal {
namespace {

class GgufCheckpoint final : public Checkpoint {
 public:
  explicit GgufCheckpoint(std::unique_ptr<GgufFile> file) : file_(std::move(file)) {}

  CheckpointFormat format() const override { return CheckpointFormat::kGguf; }
  const std::string& path() const override { return file_->name(); }
  std::string architecture() const override {
    const MetadataValue* v = file_->FindMetadata("general.architecture");
    if (v == nullptr) return "";
    StatusOr<std::string_view> s = v->AsString();
    return s.ok() ? std::string(*s) : "";
  }
  uint64_t file_size() const override { return file_->file_size(); }
  size_t file_count() const override { return 1; }
  std::span<const MetadataEntry> metadata() const override { return file_->metadata(); }
  const MetadataValue* FindMetadata(std::string_view key) const override {
    return file_->FindMetadata(key);
  }
  std::span<const TensorInfo> tensors() const override { return file_->tensors(); }
  const TensorInfo* FindTensor(std::string_view name) const override {
    return file_->FindTensor(name);
  }
  using Checkpoint::GetTensor;
  StatusOr<Tensor> GetTensor(const TensorInfo& info) const override {
    return file_->GetTensor(info);
  }

 private:
  std::unique_ptr<GgufFile> file_;
};

}  // namespace

StatusOr<std::unique_ptr<Checkpoint>> OpenGgufCheckpoint(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(path));
  return std::unique_ptr<Checkpoint>(new GgufCheckpoint(std::move(file)));
}

}  // namespace muninn::model::internal
