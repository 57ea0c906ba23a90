#include "chunk_store.h"

#include <exception>
#include <filesystem>

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

namespace muninn::memory::internal {
namespace {

constexpr const char* kCfNames[] = {"default", "records", "content", "kv", "embeddings", "documents",
                                     "states"};
static_assert(std::size(kCfNames) == static_cast<size_t>(Cf::kCount));

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsNotFound()) return NotFoundError(std::move(msg));
  if (s.IsCorruption()) return DataLossError(std::move(msg) + " (the bank is corrupt: `muninn bank verify` lists the damage, `muninn bank repair` "
                         "salvages what can be read)");
  if (s.IsInvalidArgument()) return InvalidArgumentError(std::move(msg));
  if (s.IsIOError()) return IoError(std::move(msg));
  if (s.IsBusy() || s.IsTryAgain()) return UnavailableError(std::move(msg));
  return InternalError(std::move(msg));
}

rocksdb::Slice ToSlice(std::string_view v) { return rocksdb::Slice(v.data(), v.size()); }

// Runs fn and turns an escaping exception into a Status, so none crosses this adapter.
template <typename Fn>
Status Guard(std::string_view what, Fn&& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError(std::string(what) + ": out of memory");
  } catch (const std::exception& e) {
    return InternalError(std::string(what) + ": " + e.what());
  }
}

rocksdb::ColumnFamilyOptions CfOptions(Cf cf) {
  rocksdb::ColumnFamilyOptions o;
  if (cf == Cf::kKv || cf == Cf::kStates) {
    // K/V blobs are 10 KB to a few MB: keep them out of the LSM tree so compactions do not
    // rewrite them, and do not compress (half-precision noise does not compress).
    o.enable_blob_files = true;
    o.min_blob_size = 1024;
    o.blob_compression_type = rocksdb::kNoCompression;
    o.enable_blob_garbage_collection = true;
    o.write_buffer_size = 64 << 20;
  }
  if (cf == Cf::kEmbeddings) o.compression = rocksdb::kNoCompression;
  return o;
}

// What is in a bank directory before RocksDB touches it.
enum class DirState { kMissing, kEmpty, kDatabase, kDamaged, kOther };

DirState Inspect(const std::string& path, std::string* detail) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) return DirState::kMissing;
  if (fs::exists(fs::path(path) / "CURRENT", ec)) return DirState::kDatabase;
  bool any = false;
  for (const auto& e : fs::directory_iterator(path, ec)) {
    any = true;
    const std::string name = e.path().filename().string();
    const std::string ext = e.path().extension().string();
    if (name.starts_with("MANIFEST-") || name.starts_with("OPTIONS-") || name == "IDENTITY" ||
        ext == ".sst" || ext == ".log" || ext == ".blob" || name == "index.mnx") {
      *detail = name;
      return DirState::kDamaged;
    }
  }
  if (ec) return DirState::kOther;
  return any ? DirState::kOther : DirState::kEmpty;
}

std::vector<rocksdb::ColumnFamilyDescriptor> Descriptors() {
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (size_t i = 0; i < static_cast<size_t>(Cf::kCount); ++i) {
    cfs.emplace_back(kCfNames[i], CfOptions(static_cast<Cf>(i)));
  }
  return cfs;
}

}  // namespace

WriteBatchBuilder::WriteBatchBuilder(const std::vector<rocksdb::ColumnFamilyHandle*>* handles)
    : handles_(handles), batch_(std::make_unique<rocksdb::WriteBatch>()) {}
WriteBatchBuilder::~WriteBatchBuilder() = default;
WriteBatchBuilder::WriteBatchBuilder(WriteBatchBuilder&&) noexcept = default;

void WriteBatchBuilder::Put(Cf cf, std::string_view key, std::string_view value) {
  if (!status_.ok()) return;
  status_ = Guard("batch put", [&] {
    return FromRocks(batch_->Put((*handles_)[static_cast<size_t>(cf)], ToSlice(key), ToSlice(value)),
                     "batch put");
  });
}

void WriteBatchBuilder::Delete(Cf cf, std::string_view key) {
  if (!status_.ok()) return;
  status_ = Guard("batch delete", [&] {
    return FromRocks(batch_->Delete((*handles_)[static_cast<size_t>(cf)], ToSlice(key)),
                     "batch delete");
  });
}

StatusOr<std::unique_ptr<ChunkStore>> ChunkStore::Open(const OpenOptions& options) {
  std::unique_ptr<ChunkStore> store(new ChunkStore());
  store->sync_ = options.sync;
  Status st = Guard("open RocksDB", [&]() -> Status {
    rocksdb::DBOptions db_options;
    db_options.create_if_missing = options.create_if_missing;
    db_options.create_missing_column_families = options.create_if_missing;
    // Replays the WAL up to the last intact record: a torn tail (crash mid-write) is dropped,
    // which is exactly an unacknowledged append.
    db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
    db_options.max_background_jobs = 2;
    std::string path = options.path;
    if (!options.in_memory) {
      std::string detail;
      switch (Inspect(path, &detail)) {
        case DirState::kDamaged:
          return DataLossError("the bank at " + path + " is damaged: it holds " + detail +
                               " but no CURRENT file; nothing was changed. Run `muninn bank repair "
                               "--bank " + path + "` (it backs the directory up first)");
        case DirState::kMissing:
        case DirState::kEmpty:
        case DirState::kOther:
          if (!options.create_if_missing) return NotFoundError("no memory bank at " + path);
          break;
        case DirState::kDatabase:
          break;
      }
    }
    if (options.in_memory) {
      store->env_.reset(rocksdb::NewMemEnv(rocksdb::Env::Default()));
      db_options.env = store->env_.get();
      db_options.create_if_missing = true;
      db_options.create_missing_column_families = true;
      path = "/muninn-memory-bank";
    }
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs = Descriptors();
    rocksdb::DB* db = nullptr;
    rocksdb::Status rs = rocksdb::DB::Open(db_options, path, cfs, &store->handles_, &db);
    if (!rs.ok()) {
      if (rs.IsInvalidArgument() && !options.create_if_missing) {
        return NotFoundError("no memory bank at " + path + " (" + rs.ToString() + ")");
      }
      return FromRocks(rs, "open RocksDB at " + path);
    }
    store->db_ = db;
    if (options.verify_checksums) {
      rocksdb::Status vs = db->VerifyChecksum();
      if (!vs.ok()) {
        std::string msg = "the bank at " + path + " is corrupt (" + vs.ToString() +
                          "); nothing was changed. Run `muninn bank repair --bank " + path +
                          "` (it backs the directory up first)";
        return vs.IsCorruption() ? DataLossError(std::move(msg)) : FromRocks(vs, "verify checksums");
      }
    }
    std::string header;
    rocksdb::Status hs = db->Get(rocksdb::ReadOptions(), store->handles_[0], "bank", &header);
    store->existed_ = hs.ok();
    if (!hs.ok() && !hs.IsNotFound()) return FromRocks(hs, "read bank header");
    return Status::Ok();
  });
  if (!st.ok()) {
    store->Close().IgnoreError();
    return st;
  }
  return store;
}

ChunkStore::~ChunkStore() { Close().IgnoreError(); }

Status ChunkStore::Repair(const std::string& path) {
  return Guard("repair RocksDB", [&]() -> Status {
    std::error_code ec;
    if (!std::filesystem::is_directory(path, ec)) return NotFoundError("no directory " + path);
    rocksdb::DBOptions db_options;
    return FromRocks(rocksdb::RepairDB(path, db_options, Descriptors(), rocksdb::ColumnFamilyOptions()),
                     "repair RocksDB at " + path);
  });
}

Status ChunkStore::Close() {
  if (db_ == nullptr) return Status::Ok();
  return Guard("close RocksDB", [&]() -> Status {
    Status result;
    for (auto* h : handles_) {
      Status s = FromRocks(db_->DestroyColumnFamilyHandle(h), "close column family");
      if (result.ok()) result = s;
    }
    handles_.clear();
    Status s = FromRocks(db_->Close(), "close RocksDB");
    if (result.ok()) result = s;
    delete db_;
    db_ = nullptr;
    return result;
  });
}

Status ChunkStore::Get(Cf cf, std::string_view key, std::string* value) const {
  if (db_ == nullptr) return FailedPreconditionError("memory bank store is closed");
  return Guard("read", [&] {
    return FromRocks(db_->Get(rocksdb::ReadOptions(), handles_[static_cast<size_t>(cf)],
                              ToSlice(key), value),
                     "read");
  });
}

Status ChunkStore::GetWith(Cf cf, std::string_view key,
                           const std::function<Status(std::string_view)>& fn) const {
  if (db_ == nullptr) return FailedPreconditionError("memory bank store is closed");
  return Guard("read", [&]() -> Status {
    rocksdb::PinnableSlice v;
    RETURN_IF_ERROR(FromRocks(
        db_->Get(rocksdb::ReadOptions(), handles_[static_cast<size_t>(cf)], ToSlice(key), &v),
        "read"));
    return fn(std::string_view(v.data(), v.size()));
  });
}

Status ChunkStore::ForEach(
    Cf cf, std::string_view prefix,
    const std::function<Status(std::string_view, std::string_view)>& fn) const {
  if (db_ == nullptr) return FailedPreconditionError("memory bank store is closed");
  return Guard("scan", [&]() -> Status {
    rocksdb::ReadOptions ro;
    ro.fill_cache = false;  // a full scan should not evict the hot blocks
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, handles_[static_cast<size_t>(cf)]));
    for (it->Seek(ToSlice(prefix)); it->Valid(); it->Next()) {
      const rocksdb::Slice k = it->key();
      if (!k.starts_with(ToSlice(prefix))) break;
      const rocksdb::Slice v = it->value();
      RETURN_IF_ERROR(fn(std::string_view(k.data(), k.size()), std::string_view(v.data(), v.size())));
    }
    return FromRocks(it->status(), "scan");
  });
}

Status ChunkStore::Write(WriteBatchBuilder* batch) {
  if (db_ == nullptr) return FailedPreconditionError("memory bank store is closed");
  RETURN_IF_ERROR(batch->status());
  return Guard("write", [&] {
    rocksdb::WriteOptions wo;
    wo.sync = sync_;
    return FromRocks(db_->Write(wo, batch->batch_.get()), "write");
  });
}

Status ChunkStore::SyncWal() {
  if (db_ == nullptr) return FailedPreconditionError("memory bank store is closed");
  return Guard("sync WAL", [&] { return FromRocks(db_->FlushWAL(/*sync=*/true), "sync WAL"); });
}

Status ChunkStore::CompactAll() {
  if (db_ == nullptr) return FailedPreconditionError("memory bank store is closed");
  return Guard("compact", [&]() -> Status {
    rocksdb::CompactRangeOptions co;
    for (auto* h : handles_) {
      RETURN_IF_ERROR(FromRocks(db_->CompactRange(co, h, nullptr, nullptr), "compact"));
    }
    return Status::Ok();
  });
}

}  // namespace muninn::memory::internal
