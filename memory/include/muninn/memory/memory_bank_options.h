// MemoryBankOptions: how a memory bank is laid out, how big it may grow, how it evicts and how
// hard it syncs. Shape-defining fields (dim, kv dtype, n_head_kv, head_dim, index factory) are
// fixed when a bank is created and stored in it; when an existing bank is opened, a zero/empty
// field means "take it from the bank" and a non-zero one must match (InvalidArgument otherwise).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "muninn/core/dtype.h"
#include "muninn/core/logging.h"
#include "muninn/core/status.h"

namespace muninn::memory {

enum class EvictionPolicy : uint8_t {
  kNone = 0,       // a full bank refuses appends (ResourceExhausted)
  kFrequency = 1,  // MemLong paper: least-retrieved first, oldest band always, newest protected
  kFifoHalf = 2,   // released MemLong code: drop the oldest chunks until usage <= half capacity
};
std::string_view EvictionPolicyName(EvictionPolicy p);
bool ParseEvictionPolicy(std::string_view name, EvictionPolicy* out);

// How an acknowledged append survives failures. Both keep the RocksDB write-ahead log, so an
// acknowledged append survives the death of the process (SIGKILL) in either mode.
enum class SyncPolicy : uint8_t {
  kSync = 0,   // fsync the WAL before an append returns: survives power loss too (default)
  kNoSync = 1, // leave the WAL to the OS page cache: survives process crashes only
};

struct FrequencyEvictionParams {
  // Percent of chunks (by age) deleted unconditionally, oldest first.
  int lower_percent = 10;
  // Chunks newer than this percentile (by age) are protected.
  int upper_percent = 90;
  // Eviction removes chunks until at least this fraction of all chunks is gone.
  double target_fraction = 0.5;
  // Reference behaviour: delete every chunk sharing the current lowest count (may overshoot).
  // Default: ties broken oldest-first, stop exactly at the target.
  bool whole_tie_groups = false;
};

struct MemoryBankOptions {
  // Directory holding the bank (RocksDB files + index.mnx). Ignored when in_memory.
  std::string path;
  // Keep everything in RAM (RocksDB's in-memory Env, no index file). For tests; lost on close.
  bool in_memory = false;
  // Create the bank when `path` holds none. Opening a missing bank fails otherwise (NotFound, and
  // no directory is created). A directory holding a damaged database (RocksDB files without
  // CURRENT) is never created over: that is DataLoss, whatever this flag says.
  bool create_if_missing = true;
  // Read every RocksDB table block once on open (checksums), so a corrupt table fails the open
  // (DataLoss) before anything is written, as `Verify` would. K/V blob files are not read.
  bool verify_on_open = true;

  // ---- fixed at creation (0 / empty / kCount: take from an existing bank) ----
  int64_t dim = 0;                  // retrieval embedding dimension
  // K/V: each chunk holds the pre-RoPE K/V of `kv_layers` (model layer indices, ascending),
  // n_head_kv heads of head_dim each per layer. n_head_kv = head_dim = 0 with no kv_layers: a
  // text-only bank (re-read text, kNN-LM) whose chunks carry no K/V. n_head_kv > 0 with empty
  // kv_layers: one K/V layer whose index the bank does not record (tests, tools that know it).
  std::vector<int32_t> kv_layers;
  int64_t n_head_kv = 0;            // K/V heads per chunk and layer
  int64_t head_dim = 0;             // elements per K/V head row
  // Per-token states (kNN-LM datastore: the final hidden state of each token and the token that
  // follows it), stored in f16; 0 = none. When opening, 0 takes the bank's value.
  int64_t state_dim = 0;
  DType kv_dtype = DType::kCount;   // kF16, kBF16 or kQ8_0 (creation default: kBF16)
  std::string index_factory;        // FAISS factory string ("Flat" default, "HNSW32", "IVF1024,PQ32")

  // ---- may change between opens ----
  // Capacity; 0 = unlimited. Eviction runs when an append would exceed either.
  int64_t capacity_tokens = 0;
  int64_t capacity_bytes = 0;  // stored bytes: K/V blobs + embeddings + tokens + text
  EvictionPolicy eviction = EvictionPolicy::kFrequency;
  FrequencyEvictionParams frequency;
  SyncPolicy sync = SyncPolicy::kSync;
  // The FAISS index is written to disk after this many mutations (appends, deletes, evictions)
  // and on Flush/Close; on open it is caught up from stored embeddings, so a larger value only
  // costs recovery time.
  int64_t index_persist_interval = 256;
  // Non-Flat indexes: extra candidates fetched when a filter is set (results are filtered after
  // the search). Flat indexes are filtered inside the search and are always exact.
  int64_t overfetch_factor = 4;
  // HNSW search depth (efSearch). 0 keeps FAISS's default (16). 128 gives recall@8 >= 0.95 on
  // the benchmark's data at 100k chunks (bench/memory/memory_bank_bench.cc).
  int64_t hnsw_ef_search = 128;
  // Indexes that need training (IVF...) keep vectors in an exact staging index until this many
  // exist, then train on them.
  int64_t train_min_chunks = 10000;
  // Rebuild the index when deleted-but-still-indexed vectors (HNSW cannot remove) exceed this
  // fraction of the index.
  double max_tombstone_fraction = 0.25;

  Logger* logger = nullptr;  // not owned; null = silent

  // Checks ranges and combinations (not the existence of the path).
  Status Validate() const;
};

}  // namespace muninn::memory
