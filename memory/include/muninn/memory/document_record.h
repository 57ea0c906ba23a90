// DocumentRecord: the memory bank's catalog entry for one document (its name, size and whether
// its ingest finished). The bank is the one source of truth for document ids: MemoryBank::
// BeginDocument hands out ids that are never reused and records the document as partial before
// any of its chunks is appended, so an ingest that is killed leaves a visible partial entry.
#pragma once

#include <cstdint>
#include <string>

#include "muninn/memory/chunk_record.h"

namespace muninn::memory {

// Document ids at or above this value are never handed out by the bank; callers may use them for
// internal documents (e.g. the long-context session's overflow id ~0). Such ids are not listed
// unless they have a record.
inline constexpr DocumentId kFirstReservedDocumentId = DocumentId{1} << 63;

enum class DocumentState : uint8_t {
  kPartial = 1,   // ingest started but has not finished (or failed, or was killed)
  kComplete = 2,  // every chunk of the document is in the bank
};

struct DocumentRecord {
  DocumentId id = 0;
  std::string name;  // as given by the caller; may be empty (e.g. chunks without a record)
  int64_t tokens = 0;
  DocumentState state = DocumentState::kPartial;
  // Filled by MemoryBank::ListDocuments/GetDocument: live chunks of the document now (eviction
  // may have removed some). Not stored.
  int64_t n_chunks = 0;
  // False when the bank holds chunks of this document but no record (a bank written before
  // records existed, or by a crashed writer that did not call BeginDocument). Not stored.
  bool has_record = true;
};

}  // namespace muninn::memory
