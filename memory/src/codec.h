// Byte formats of everything the memory bank stores (see docs/MEMORY_BANK.md for the layout).
// All integers are little-endian; RocksDB keys holding ids are big-endian so that key order is id
// order. Every value ends with a CRC-32C of the bytes before it (the K/V blob checksums its
// header and its payload separately, so that a fetch can skip the payload check).
//
// Decoders treat their input as untrusted: every length is checked against the bytes present and
// any mismatch is DataLoss naming what was wrong.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/dtype.h"
#include "muninn/core/status.h"
#include "muninn/core/tensor.h"

namespace muninn::memory::internal {

inline constexpr uint32_t kBankMagic = 0x4B424E4Du;   // "MNBK"
inline constexpr uint32_t kKvMagic = 0x564B4E4Du;     // "MNKV"
inline constexpr uint32_t kIndexMagic = 0x58494E4Du;  // "MNIX"
inline constexpr uint32_t kStatesMagic = 0x54534E4Du;  // "MNST"
// 2: K/V of a list of layers per chunk (or none), per-token states, 56-byte records.
inline constexpr uint32_t kFormatVersion = 2;
inline constexpr uint32_t kIndexFormatVersion = 1;  // index.mnx (vector_index.cc)

// ---- keys ----
std::string IdKey(uint64_t id);                    // 8 bytes big-endian
StatusOr<uint64_t> ParseIdKey(std::string_view key);
std::string DocKey(uint64_t doc_id, uint64_t id);  // 16 bytes: doc BE, id BE
std::string DocPrefix(uint64_t doc_id);            // 8 bytes: doc BE

// ---- bank header (default CF, key "bank") ----
struct BankHeader {
  uint32_t version = kFormatVersion;
  int64_t dim = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;
  DType kv_dtype = DType::kBF16;
  std::string index_factory;
  std::vector<int32_t> kv_layers;  // model layers whose K/V each chunk holds (may be empty)
  int64_t state_dim = 0;           // per-token state width (0: no states)
};
std::string EncodeBankHeader(const BankHeader& h);
StatusOr<BankHeader> DecodeBankHeader(std::string_view bytes);

// ---- bank state (default CF, key "state"), rewritten in every mutation batch ----
struct BankState {
  uint64_t next_id = 1;
  uint64_t mutation_seq = 0;
  uint64_t evicted_chunks = 0;
};
std::string EncodeBankState(const BankState& s);
StatusOr<BankState> DecodeBankState(std::string_view bytes);

// ---- chunk record (records CF) ----
struct RecordValue {
  uint64_t doc_id = 0;
  int64_t position = 0;
  uint32_t n_tokens = 0;
  uint32_t retrieval_count = 0;
  uint64_t kv_bytes = 0;       // size of the kv CF value
  uint64_t content_bytes = 0;  // size of the content CF value
  uint64_t states_bytes = 0;   // size of the states CF value (0: none)
};
inline constexpr size_t kRecordBytes = 56;
std::string EncodeRecord(const RecordValue& r);
StatusOr<RecordValue> DecodeRecord(std::string_view bytes);

// ---- content (content CF): tokens + text ----
std::string EncodeContent(std::span<const int32_t> tokens, std::string_view text);
Status DecodeContent(std::string_view bytes, std::vector<int32_t>* tokens, std::string* text);

// ---- embedding (embeddings CF) ----
std::string EncodeEmbedding(std::span<const float> v);
// Checks the CRC and that the value holds exactly `dim` floats.
Status DecodeEmbedding(std::string_view bytes, int64_t dim, float* out);

// ---- K/V blob (kv CF) ----
struct KvHeader {
  DType dtype = DType::kBF16;
  int64_t n_head_kv = 0;
  int64_t n_tokens = 0;
  int64_t head_dim = 0;
  uint64_t payload_bytes = 0;  // K rows then V rows
  uint32_t payload_crc = 0;
};
inline constexpr size_t kKvHeaderBytes = 40;
// Bytes of one of K or V: n_head_kv * n_tokens rows of head_dim elements in `dtype`.
StatusOr<size_t> KvHalfBytes(DType dtype, int64_t n_head_kv, int64_t n_tokens, int64_t head_dim);
// Converts f32 K and V ([n_head_kv, n_tokens, head_dim], packed rows) to `dtype` and frames them.
StatusOr<std::string> EncodeKv(DType dtype, const Tensor& k, const Tensor& v);
// Parses and checks the header (not the payload CRC) against the bytes present.
StatusOr<KvHeader> DecodeKvHeader(std::string_view bytes);
// Full check, payload CRC included.
Status VerifyKv(std::string_view bytes);
// Converts `n` stored elements of `dtype` to f32.
void DequantizeKvRow(DType dtype, const void* src, float* dst, int64_t n);
// ---- per-token states (states CF): kNN-LM datastore ----
// u32 magic "MNST" | u16 version 1 | u16 0 | u32 n_tokens | u32 state_dim |
// f16 states [n_tokens, state_dim] | i32 next_tokens [n_tokens] | crc
std::string EncodeStates(std::span<const float> states, std::span<const int32_t> next_tokens,
                         int64_t state_dim);
// Checks the frame and the CRC against `n_tokens` and `state_dim`; writes f32 states and next
// tokens.
Status DecodeStates(std::string_view bytes, int64_t n_tokens, int64_t state_dim, float* states,
                    int32_t* next_tokens);

// Whether `dtype` can be a bank's kv_dtype.
bool IsSupportedKvDType(DType dtype);

}  // namespace muninn::memory::internal
