#include "document_catalog.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace muninn::tools {

StatusOr<DocumentCatalog> DocumentCatalog::Load(const std::string& bank_dir) {
  DocumentCatalog c;
  c.path_ = (std::filesystem::path(bank_dir) / "muninn-documents.json").string();
  std::ifstream in(c.path_);
  if (!in) return c;
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return DataLossError("'" + c.path_ + "' is not a JSON object; delete it to forget document names");
  }
  for (const auto& [key, v] : j.items()) {
    char* end = nullptr;
    const unsigned long long id = std::strtoull(key.c_str(), &end, 10);
    if (end == key.c_str() || *end != '\0' || !v.is_object() || !v.contains("name") ||
        !v["name"].is_string()) {
      return DataLossError("'" + c.path_ + "': bad entry '" + key + "'");
    }
    DocumentEntry e;
    e.name = v["name"].get<std::string>();
    if (v.contains("tokens") && v["tokens"].is_number_integer()) e.tokens = v["tokens"].get<int64_t>();
    c.docs_[id] = std::move(e);
  }
  return c;
}

Status DocumentCatalog::Save() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [id, e] : docs_) j[std::to_string(id)] = {{"name", e.name}, {"tokens", e.tokens}};
  const std::string tmp = path_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    if (!out) return IoError("cannot write '" + tmp + "'");
  }
  if (std::rename(tmp.c_str(), path_.c_str()) != 0) return ErrnoError("rename to '" + path_ + "'", errno);
  return Status::Ok();
}

std::string DocumentCatalog::NameOf(uint64_t id) const {
  auto it = docs_.find(id);
  return it == docs_.end() ? "doc " + std::to_string(id) : it->second.name;
}

}  // namespace muninn::tools
