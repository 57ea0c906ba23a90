// Private to tools/: names of the documents in a memory bank. The bank knows documents only by
// number; tools keeps `<bank>/muninn-documents.json` ({"1": {"name": "...", "tokens": N}, ...})
// beside it, written atomically (temp file + rename) after the bank acknowledged the chunks.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "muninn/core/status.h"

namespace muninn::tools {

struct DocumentEntry {
  std::string name;
  int64_t tokens = 0;
};

class DocumentCatalog {
 public:
  // Reads the catalog of bank directory `bank_dir` (empty when the file does not exist).
  static StatusOr<DocumentCatalog> Load(const std::string& bank_dir);
  Status Save() const;

  uint64_t NextId() const { return docs_.empty() ? 1 : docs_.rbegin()->first + 1; }
  void Put(uint64_t id, DocumentEntry e) { docs_[id] = std::move(e); }
  void Erase(uint64_t id) { docs_.erase(id); }
  // "doc <id>" when unknown.
  std::string NameOf(uint64_t id) const;
  const std::map<uint64_t, DocumentEntry>& docs() const { return docs_; }

 private:
  std::string path_;
  std::map<uint64_t, DocumentEntry> docs_;
};

}  // namespace muninn::tools
