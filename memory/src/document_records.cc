#include "document_records.h"

#include "crc32c.h"

namespace muninn::memory::internal {
namespace {

void PutLe(std::string* s, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
}

uint64_t GetLe(std::string_view b, size_t pos, int bytes) {
  uint64_t x = 0;
  for (int i = 0; i < bytes; ++i) {
    x |= static_cast<uint64_t>(static_cast<uint8_t>(b[pos + static_cast<size_t>(i)])) << (8 * i);
  }
  return x;
}

// Checks the trailing CRC-32C and returns the bytes before it.
StatusOr<std::string_view> Body(std::string_view bytes, size_t min_body, const char* what) {
  if (bytes.size() < min_body + 4) return DataLossError(std::string(what) + " is truncated");
  const std::string_view body = bytes.substr(0, bytes.size() - 4);
  const auto stored = static_cast<uint32_t>(GetLe(bytes, bytes.size() - 4, 4));
  if (Crc32c(0, body.data(), body.size()) != stored) {
    return DataLossError(std::string(what) + " fails its checksum (corrupt data)");
  }
  return body;
}

}  // namespace

std::string DocumentKey(DocumentId id) {
  std::string k(kDocumentKeyPrefix);
  for (int i = 0; i < 8; ++i) k.push_back(static_cast<char>((id >> (56 - 8 * i)) & 0xffu));
  return k;
}

StatusOr<DocumentId> ParseDocumentKey(std::string_view key) {
  if (key.size() != kDocumentKeyPrefix.size() + 8 || !key.starts_with(kDocumentKeyPrefix)) {
    return DataLossError("malformed document key (" + std::to_string(key.size()) + " bytes)");
  }
  DocumentId id = 0;
  for (size_t i = kDocumentKeyPrefix.size(); i < key.size(); ++i) {
    id = (id << 8) | static_cast<uint8_t>(key[i]);
  }
  return id;
}

// Layout: u32 magic | u16 version | u8 state | u8 zero | u64 id | u64 tokens | u32 name_len |
// name | u32 crc.
std::string EncodeDocumentRecord(const DocumentRecord& r) {
  std::string s;
  s.reserve(32 + r.name.size());
  PutLe(&s, kDocumentMagic, 4);
  PutLe(&s, kDocumentFormatVersion, 2);
  PutLe(&s, static_cast<uint8_t>(r.state), 1);
  PutLe(&s, 0, 1);
  PutLe(&s, r.id, 8);
  PutLe(&s, static_cast<uint64_t>(r.tokens), 8);
  PutLe(&s, r.name.size(), 4);
  s.append(r.name);
  PutLe(&s, Crc32c(0, s.data(), s.size()), 4);
  return s;
}

StatusOr<DocumentRecord> DecodeDocumentRecord(std::string_view bytes) {
  constexpr size_t kFixed = 28;
  ASSIGN_OR_RETURN(std::string_view b, Body(bytes, kFixed, "document record"));
  if (GetLe(b, 0, 4) != kDocumentMagic) return DataLossError("document record: bad magic");
  const auto version = static_cast<uint16_t>(GetLe(b, 4, 2));
  if (version != kDocumentFormatVersion) {
    return DataLossError("document record version " + std::to_string(version) +
                         " is not supported by this build (it reads version " +
                         std::to_string(kDocumentFormatVersion) + ")");
  }
  DocumentRecord r;
  const auto state = static_cast<uint8_t>(GetLe(b, 6, 1));
  if (state != static_cast<uint8_t>(DocumentState::kPartial) &&
      state != static_cast<uint8_t>(DocumentState::kComplete)) {
    return DataLossError("document record: unknown state " + std::to_string(state));
  }
  r.state = static_cast<DocumentState>(state);
  r.id = GetLe(b, 8, 8);
  const uint64_t tokens = GetLe(b, 16, 8);
  if (tokens > static_cast<uint64_t>(INT64_MAX)) return DataLossError("document record: bad tokens");
  r.tokens = static_cast<int64_t>(tokens);
  const uint64_t name_len = GetLe(b, 24, 4);
  if (name_len != b.size() - kFixed) {
    return DataLossError("document record: name length " + std::to_string(name_len) +
                         " does not match the " + std::to_string(b.size() - kFixed) +
                         " bytes present");
  }
  r.name = std::string(b.substr(kFixed));
  return r;
}

// Layout: u32 magic | u32 version | u64 next document id | u32 crc.
std::string EncodeDocumentState(DocumentId next_document_id) {
  std::string s;
  PutLe(&s, kDocumentStateMagic, 4);
  PutLe(&s, kDocumentFormatVersion, 4);
  PutLe(&s, next_document_id, 8);
  PutLe(&s, Crc32c(0, s.data(), s.size()), 4);
  return s;
}

StatusOr<DocumentId> DecodeDocumentState(std::string_view bytes) {
  ASSIGN_OR_RETURN(std::string_view b, Body(bytes, 16, "document state"));
  if (b.size() != 16 || GetLe(b, 0, 4) != kDocumentStateMagic) {
    return DataLossError("document state: bad magic or size");
  }
  if (GetLe(b, 4, 4) != kDocumentFormatVersion) {
    return DataLossError("document state version " + std::to_string(GetLe(b, 4, 4)) +
                         " is not supported by this build");
  }
  return GetLe(b, 8, 8);
}

}  // namespace muninn::memory::internal
