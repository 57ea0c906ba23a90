// Chunk records: what the memory bank stores per chunk of a document, and what it gives back.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "muninn/core/tensor.h"

namespace muninn::memory {

// Stable 64-bit chunk id, assigned by the bank in append order: a larger id is a newer chunk, so
// sorting ids sorts chronologically. Ids are never reused, even after eviction.
using ChunkId = uint64_t;
// Caller-chosen document id.
using DocumentId = uint64_t;

// One chunk to append. The spans and tensors are borrowed for the duration of Append().
struct ChunkInput {
  DocumentId doc_id = 0;
  int64_t position = 0;                 // token offset of the chunk's first token in its document
  std::span<const int32_t> tokens;      // [n_tokens]
  std::string_view text;                // UTF-8 text of the chunk
  std::span<const float> embedding;     // [dim], retrieval embedding (normally L2-normalised)
  // Keys and values before RoPE of the bank's kv_layers, f32, [n_kv_layers · n_head_kv,
  // n_tokens, head_dim] each (layer-major: rows [l · n_head_kv, (l + 1) · n_head_kv) are layer
  // kv_layers[l]). Stored in the bank's kv_dtype. Strided views are accepted as long as rows are
  // packed. Undefined for a bank without K/V.
  Tensor k;
  Tensor v;
  // Banks with state_dim > 0 only: [n_tokens, state_dim] final hidden states, and for each token
  // the token that follows it in the document (-1 when unknown, e.g. at the document's end).
  std::span<const float> states;
  std::span<const int32_t> next_tokens;
};

// Bookkeeping kept for every live chunk.
struct ChunkInfo {
  ChunkId id = 0;
  DocumentId doc_id = 0;
  int64_t position = 0;
  int64_t n_tokens = 0;
  uint32_t retrieval_count = 0;  // top-k selections since insertion (one per query)
  int64_t stored_bytes = 0;      // K/V blob + embedding + tokens + text
};

// Everything stored for one chunk (MemoryBank::GetChunk).
struct ChunkRecord {
  ChunkInfo info;
  std::vector<int32_t> tokens;  // [n_tokens]
  std::string text;
  std::vector<float> embedding;  // [dim]
  Tensor k;                      // f32 [n_kv_layers · n_head_kv, n_tokens, head_dim]; undefined
  Tensor v;                      //   in a bank without K/V
};

}  // namespace muninn::memory
