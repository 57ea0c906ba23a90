// Byte format of the memory bank's document catalog (docs/MEMORY_BANK.md, "Document records").
// Kept apart from codec.h so that the chunk formats and the catalog evolve independently.
//
// Keys live in the default column family:
//   "doc:" ++ doc id (8 bytes, big-endian)  -> document record
//   "docs"                                  -> document state (the next document id)
// Decoders treat their input as untrusted and report DataLoss naming what was wrong.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "muninn/core/status.h"
#include "muninn/memory/document_record.h"

namespace muninn::memory::internal {

inline constexpr uint32_t kDocumentMagic = 0x43444E4Du;       // "MNDC"
inline constexpr uint32_t kDocumentStateMagic = 0x53444E4Du;  // "MNDS"
inline constexpr uint16_t kDocumentFormatVersion = 1;
inline constexpr std::string_view kDocumentKeyPrefix = "doc:";
inline constexpr std::string_view kDocumentStateKey = "docs";
// Longest name stored; longer names are refused (InvalidArgument) by the bank.
inline constexpr size_t kMaxDocumentNameBytes = 4096;

std::string DocumentKey(DocumentId id);
StatusOr<DocumentId> ParseDocumentKey(std::string_view key);

// Stores id (for a cross-check against the key), state, tokens and name; n_chunks and has_record
// are not stored.
std::string EncodeDocumentRecord(const DocumentRecord& r);
StatusOr<DocumentRecord> DecodeDocumentRecord(std::string_view bytes);

std::string EncodeDocumentState(DocumentId next_document_id);
StatusOr<DocumentId> DecodeDocumentState(std::string_view bytes);

}  // namespace muninn::memory::internal
