#include "document_catalog.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace muninn::tools {

namespace {
constexpr std::string_view kPartialSuffix = " (partial)";
}  // namespace

Status MigrateLegacyCatalog(const std::string& bank_dir, memory::MemoryBank* bank) {
  namespace fs = std::filesystem;
  const std::string path = (fs::path(bank_dir) / kLegacyCatalogFile).string();
  std::ifstream in(path);
  if (!in) return Status::Ok();
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  const std::string fix = "; fix or delete it (the documents stay in the bank, unnamed)";
  if (j.is_discarded() || !j.is_object()) return DataLossError("'" + path + "' is not a JSON object" + fix);
  std::vector<memory::DocumentRecord> records;
  for (const auto& [key, v] : j.items()) {
    char* end = nullptr;
    const unsigned long long id = std::strtoull(key.c_str(), &end, 10);
    if (end == key.c_str() || *end != '\0' || id == 0 || !v.is_object() || !v.contains("name") ||
        !v["name"].is_string()) {
      return DataLossError("'" + path + "': bad entry '" + key + "'" + fix);
    }
    memory::DocumentRecord r;
    r.id = id;
    r.name = v["name"].get<std::string>();
    r.state = memory::DocumentState::kComplete;
    if (r.name.size() >= kPartialSuffix.size() && r.name.ends_with(kPartialSuffix)) {
      r.name.resize(r.name.size() - kPartialSuffix.size());
      r.state = memory::DocumentState::kPartial;
    }
    if (v.contains("tokens") && v["tokens"].is_number_integer()) {
      r.tokens = std::max<int64_t>(0, v["tokens"].get<int64_t>());
    }
    records.push_back(std::move(r));
  }
  for (const auto& r : records) {
    auto existing = bank->GetDocument(r.id);
    if (existing.ok() && existing->has_record) continue;  // the bank's record wins
    RETURN_IF_ERROR(bank->PutDocument(r).WithContext("migrating '" + path + "'"));
  }
  const std::string done = (fs::path(bank_dir) / kMigratedCatalogFile).string();
  if (std::rename(path.c_str(), done.c_str()) != 0) {
    return ErrnoError("renaming the migrated '" + path + "' to '" + done + "'", errno);
  }
  return Status::Ok();
}

std::string DisplayName(const memory::DocumentRecord& r) {
  std::string name = r.name.empty() ? "doc " + std::to_string(r.id) : r.name;
  if (r.state == memory::DocumentState::kPartial) name += kPartialSuffix;
  return name;
}

std::string DocumentName(const memory::MemoryBank& bank, memory::DocumentId id) {
  auto r = bank.GetDocument(id);
  return r.ok() ? DisplayName(*r) : "doc " + std::to_string(id);
}

}  // namespace muninn::tools
