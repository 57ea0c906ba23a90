// Private to tools/: how tools name the documents of a memory bank. The catalog itself lives in
// the bank (MemoryBank::BeginDocument / PutDocument / ListDocuments, docs/MEMORY_BANK.md): ids
// come from the bank, never from a side file, so an interrupted ingest can never lend its id
// (and its orphaned chunks) to the next document.
#pragma once

#include <string>

#include "muninn/core/status.h"
#include "muninn/memory/memory_bank.h"

namespace muninn::tools {

// Name of the side file older versions kept beside the bank, and what it is renamed to once its
// entries are in the bank.
inline constexpr const char* kLegacyCatalogFile = "muninn-documents.json";
inline constexpr const char* kMigratedCatalogFile = "muninn-documents.json.migrated";

// Moves `<bank_dir>/muninn-documents.json` (if any) into the bank: every entry the bank has no
// record for becomes one (names ending in " (partial)" become partial records), then the file is
// renamed to muninn-documents.json.migrated. DataLoss for a file that does not parse (the bank is
// left unchanged; the message says how to proceed).
Status MigrateLegacyCatalog(const std::string& bank_dir, memory::MemoryBank* bank);

// "NAME" for a complete document, "NAME (partial)" for one whose ingest did not finish, and
// "doc N (partial)" for chunks without a record.
std::string DisplayName(const memory::DocumentRecord& r);

// DisplayName of document `id`, or "doc N" when the bank does not know it.
std::string DocumentName(const memory::MemoryBank& bank, memory::DocumentId id);

}  // namespace muninn::tools
