// ChunkStore: the one adapter between the memory bank and RocksDB. It owns the DB, its column
// families and (in memory mode) its Env, converts rocksdb::Status to muninn Status and stops any
// exception RocksDB or the standard library throws. See docs/MEMORY_BANK.md for what each column
// family holds.
//
// Thread safety: as RocksDB's: Get/ForEach from many threads, Write from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/status.h"

namespace rocksdb {
class DB;
class Env;
class ColumnFamilyHandle;
class WriteBatch;
}  // namespace rocksdb

namespace muninn::memory::internal {

enum class Cf : int {
  kDefault = 0,  // bank header and state
  kRecords,      // id -> RecordValue (small, scanned on open)
  kContent,      // id -> tokens + text
  kKv,           // id -> K/V blob (large; RocksDB blob files)
  kEmbeddings,   // id -> float[dim]
  kDocuments,    // doc id ++ chunk id -> "" (a document's chunks, by prefix)
  kStates,       // id -> per-token final hidden states + next tokens (kNN-LM datastore)
  kCount,
};

// A set of puts and deletes applied atomically by ChunkStore::Write. Made by ChunkStore::NewBatch
// and valid while that store is open.
class WriteBatchBuilder {
 public:
  ~WriteBatchBuilder();
  WriteBatchBuilder(WriteBatchBuilder&&) noexcept;
  void Put(Cf cf, std::string_view key, std::string_view value);
  void Delete(Cf cf, std::string_view key);
  // Status of the first failed Put/Delete (e.g. out of memory), checked again by Write.
  const Status& status() const { return status_; }

 private:
  friend class ChunkStore;
  explicit WriteBatchBuilder(const std::vector<rocksdb::ColumnFamilyHandle*>* handles);
  const std::vector<rocksdb::ColumnFamilyHandle*>* handles_;
  std::unique_ptr<rocksdb::WriteBatch> batch_;
  Status status_;
};

class ChunkStore {
 public:
  struct OpenOptions {
    std::string path;
    bool in_memory = false;
    bool create_if_missing = true;
    bool sync = true;
    // Read every SST block once (RocksDB VerifyChecksum) before returning, so a corrupt table
    // fails the open instead of a later read. K/V blob files are not read.
    bool verify_checksums = false;
  };
  // Never creates or repairs anything in a directory that holds a damaged database (RocksDB
  // files but no CURRENT): that is DataLoss pointing at `muninn bank repair`. Without
  // create_if_missing a missing bank is NotFound and no directory is created.
  static StatusOr<std::unique_ptr<ChunkStore>> Open(const OpenOptions& options);
  // Runs RocksDB's repair on the database at `path` (must not be open), salvaging what can be
  // read into a fresh MANIFEST. Data in corrupt tables may be lost: back the directory up first.
  static Status Repair(const std::string& path);
  ~ChunkStore();
  ChunkStore(const ChunkStore&) = delete;
  ChunkStore& operator=(const ChunkStore&) = delete;

  // NotFound when the key does not exist.
  Status Get(Cf cf, std::string_view key, std::string* value) const;
  // Calls fn with the value in place (no copy); the view is valid only during the call.
  Status GetWith(Cf cf, std::string_view key,
                 const std::function<Status(std::string_view)>& fn) const;
  // Visits every key starting with `prefix` in key order; stops at the first non-OK fn result.
  Status ForEach(Cf cf, std::string_view prefix,
                 const std::function<Status(std::string_view key, std::string_view value)>& fn) const;
  WriteBatchBuilder NewBatch() const { return WriteBatchBuilder(&handles_); }
  // Applies the batch atomically (and durably per the sync option).
  Status Write(WriteBatchBuilder* batch);
  Status SyncWal();
  Status CompactAll();
  // Closes the DB; later calls fail. Idempotent.
  Status Close();
  // True when the bank existed before Open (its default column family holds a header).
  bool existed() const { return existed_; }

 private:
  ChunkStore() = default;
  std::unique_ptr<rocksdb::Env> env_;  // in-memory mode only
  rocksdb::DB* db_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  bool sync_ = true;
  bool existed_ = false;
};

}  // namespace muninn::memory::internal
