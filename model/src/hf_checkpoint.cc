// Checkpoint over a Hugging Face folder: config.json plus model.safetensors, or shards listed in
// model.safetensors.index.json ({"weight_map": {tensor: shard file}}).
#include <sys/stat.h>

#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "checkpoint_impl.h"
#include "muninn/core/mapped_file.h"
#include "muninn/model/safetensors_file.h"

namespace muninn::model::internal {
namespace {

using Json = nlohmann::json;

constexpr uint64_t kMaxJsonFileBytes = 64ull << 20;  // config and index files are a few KB
constexpr int kMaxJsonDepth = 32;

bool IsFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Reads and parses a small JSON file; never throws, rejects deep nesting.
StatusOr<Json> ReadJsonFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  if (file->size() > kMaxJsonFileBytes) {
    return InvalidArgumentError(path + ": " + std::to_string(file->size()) +
                                " bytes is too large for a JSON config file");
  }
  bool too_deep = false;
  auto callback = [&too_deep](int depth, Json::parse_event_t event, Json&) {
    if ((event == Json::parse_event_t::object_start ||
         event == Json::parse_event_t::array_start) && depth >= kMaxJsonDepth) {
      too_deep = true;
      return false;
    }
    return true;
  };
  Json j;
  try {
    const char* begin = reinterpret_cast<const char*>(file->data());
    j = Json::parse(begin, begin + file->size(), callback, /*allow_exceptions=*/false);
  } catch (const std::exception& e) {
    return InvalidArgumentError(path + ": invalid JSON: " + e.what());
  }
  if (j.is_discarded() || too_deep) {
    return InvalidArgumentError(path + ": invalid JSON (syntax error or nested deeper than " +
                                std::to_string(kMaxJsonDepth) + " levels)");
  }
  if (!j.is_object()) return InvalidArgumentError(path + ": expected a JSON object");
  return j;
}

// JSON array -> typed MetadataValue; false when it is not a homogeneous array of scalars/arrays.
bool ArrayToMetadata(const Json& a, MetadataValue* out) {
  bool all_int = true, all_num = true, all_bool = true, all_str = true, all_arr = true;
  for (const Json& e : a) {
    all_int = all_int && e.is_number_integer();
    all_num = all_num && e.is_number();
    all_bool = all_bool && e.is_boolean();
    all_str = all_str && e.is_string();
    all_arr = all_arr && e.is_array();
  }
  if (a.empty() || all_str) {
    std::vector<std::string> v;
    for (const Json& e : a) v.push_back(e.get<std::string>());
    *out = MetadataValue::StringArray(std::move(v));
  } else if (all_bool) {
    std::vector<uint8_t> raw;
    for (const Json& e : a) raw.push_back(e.get<bool>() ? 1 : 0);
    *out = MetadataValue::ScalarArray(MetadataType::kBool, std::move(raw));
  } else if (all_int) {
    std::vector<int64_t> v;
    for (const Json& e : a) v.push_back(e.get<int64_t>());  // u64 above INT64_MAX wraps: rare
    *out = MetadataValue::IntArray(MetadataType::kI64, v);
  } else if (all_num) {
    std::vector<double> v;
    for (const Json& e : a) v.push_back(e.get<double>());
    *out = MetadataValue::FloatArray(MetadataType::kF64, v);
  } else if (all_arr) {
    std::vector<MetadataValue> v;
    for (const Json& e : a) {
      MetadataValue inner;
      if (!ArrayToMetadata(e, &inner)) return false;
      v.push_back(std::move(inner));
    }
    *out = MetadataValue::ArrayOfArrays(std::move(v));
  } else {
    return false;
  }
  return true;
}

// Flattens config.json into entries: nested objects joined with '.', nulls and arrays of
// objects dropped (see checkpoint.h).
void Flatten(const Json& j, const std::string& prefix, int depth,
             std::vector<MetadataEntry>* out) {
  for (const auto& [k, v] : j.items()) {
    const std::string key = prefix.empty() ? k : prefix + "." + k;
    MetadataValue m;
    if (v.is_object()) {
      if (depth < kMaxJsonDepth) Flatten(v, key, depth + 1, out);
      continue;
    } else if (v.is_string()) {
      m = MetadataValue::String(v.get<std::string>());
    } else if (v.is_boolean()) {
      m = MetadataValue::Bool(v.get<bool>());
    } else if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      m = MetadataValue::U64(v.get<uint64_t>());
    } else if (v.is_number_integer()) {
      m = MetadataValue::I64(v.get<int64_t>());
    } else if (v.is_number()) {
      m = MetadataValue::F64(v.get<double>());
    } else if (v.is_array()) {
      if (!ArrayToMetadata(v, &m)) continue;
    } else {
      continue;  // null
    }
    out->push_back({key, std::move(m)});
  }
}

// A shard name from the index must be a plain file name inside the folder.
bool IsSafeShardName(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name != "." && name != ".." &&
         name.find('\0') == std::string::npos;
}

class HfCheckpoint final : public Checkpoint {
 public:
  CheckpointFormat format() const override { return CheckpointFormat::kHuggingFace; }
  const std::string& path() const override { return path_; }
  std::string architecture() const override {
    const MetadataValue* v = FindMetadata("model_type");
    if (v == nullptr) return "";
    StatusOr<std::string_view> s = v->AsString();
    return s.ok() ? std::string(*s) : "";
  }
  uint64_t file_size() const override {
    uint64_t total = 0;
    for (const auto& s : shards_) total += s->file_size();
    return total;
  }
  size_t file_count() const override { return shards_.size(); }
  std::span<const MetadataEntry> metadata() const override { return metadata_; }
  const MetadataValue* FindMetadata(std::string_view key) const override {
    auto it = metadata_index_.find(key);
    return it == metadata_index_.end() ? nullptr : &metadata_[it->second].value;
  }
  std::span<const TensorInfo> tensors() const override { return tensors_; }
  const TensorInfo* FindTensor(std::string_view name) const override {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }
  using Checkpoint::GetTensor;
  StatusOr<Tensor> GetTensor(const TensorInfo& info) const override {
    MUNINN_CHECK(info.file_index < shards_.size()) << "TensorInfo from another checkpoint";
    return shards_[info.file_index]->GetTensor(info);
  }

  Status Load(const std::string& path);

 private:
  Status AddShard(const std::string& file);

  std::string path_;
  std::vector<MetadataEntry> metadata_;
  std::map<std::string, size_t, std::less<>> metadata_index_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

Status HfCheckpoint::AddShard(const std::string& file) {
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> shard, SafetensorsFile::Open(file));
  const auto index = static_cast<uint32_t>(shards_.size());
  for (TensorInfo t : shard->tensors()) {
    t.file_index = index;
    if (!tensor_index_.emplace(t.name, tensors_.size()).second) {
      return InvalidArgumentError(path_ + ": tensor '" + t.name + "' appears in more than one "
                                  "shard (again in " + file + ")");
    }
    tensors_.push_back(std::move(t));
  }
  shards_.push_back(std::move(shard));
  return Status::Ok();
}

Status HfCheckpoint::Load(const std::string& path) {
  path_ = path;
  std::string dir = path;
  std::string single;  // a .safetensors file named directly
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    single = path;
    const size_t slash = path.find_last_of('/');
    dir = slash == std::string::npos ? "." : path.substr(0, slash);
  }
  const std::string config = dir + "/config.json";
  if (!IsFile(config)) {
    return NotFoundError("'" + dir + "' has no config.json; a Hugging Face model folder needs it "
                         "next to the safetensors weights");
  }
  ASSIGN_OR_RETURN(Json cfg, ReadJsonFile(config));
  Flatten(cfg, "", 0, &metadata_);
  for (size_t i = 0; i < metadata_.size(); ++i) metadata_index_.emplace(metadata_[i].key, i);

  if (!single.empty()) return AddShard(single);
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (IsFile(index_path)) {
    ASSIGN_OR_RETURN(Json index, ReadJsonFile(index_path));
    const auto map_it = index.find("weight_map");
    if (map_it == index.end() || !map_it->is_object()) {
      return InvalidArgumentError(index_path + ": no 'weight_map' object");
    }
    std::map<std::string, std::string> wanted;  // tensor -> shard
    std::vector<std::string> shard_order;
    std::set<std::string> seen;
    for (const auto& [tensor, shard] : map_it->items()) {
      if (!shard.is_string() || !IsSafeShardName(shard.get<std::string>())) {
        return InvalidArgumentError(index_path + ": weight_map entry '" + tensor +
                                    "' must name a safetensors file inside the folder");
      }
      const std::string name = shard.get<std::string>();
      wanted.emplace(tensor, name);
      if (seen.insert(name).second) shard_order.push_back(name);
    }
    for (const std::string& name : shard_order) RETURN_IF_ERROR(AddShard(dir + "/" + name));
    for (const auto& [tensor, shard] : wanted) {
      const TensorInfo* t = FindTensor(tensor);
      if (t == nullptr || shards_[t->file_index]->name() != dir + "/" + shard) {
        return InvalidArgumentError(index_path + ": tensor '" + tensor + "' is listed in " +
                                    shard + " but that shard does not contain it");
      }
    }
    return Status::Ok();
  }
  const std::string weights = dir + "/model.safetensors";
  if (!IsFile(weights)) {
    return NotFoundError("'" + dir + "' has neither model.safetensors nor "
                         "model.safetensors.index.json");
  }
  return AddShard(weights);
}

}  // namespace

StatusOr<std::unique_ptr<Checkpoint>> OpenHfCheckpoint(const std::string& path) {
  auto ckpt = std::make_unique<HfCheckpoint>();
  Status s;
  try {  // nlohmann accessors are type-checked above; this is the adapter's last line of defence
    s = ckpt->Load(path);
  } catch (const std::exception& e) {
    s = InvalidArgumentError(path + ": " + e.what());
  }
  RETURN_IF_ERROR(s);
  return std::unique_ptr<Checkpoint>(std::move(ckpt));
}

}  // namespace muninn::model::internal
