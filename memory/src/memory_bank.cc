#include "muninn/memory/memory_bank.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <unordered_set>

#include "chunk_store.h"
#include "codec.h"
#include "document_records.h"
#include "eviction.h"
#include "lexical_index.h"
#include "vector_index.h"

namespace muninn::memory {

using internal::Cf;
using internal::ChunkStore;
using internal::VectorIndex;

namespace {

constexpr const char* kIndexFileName = "index.mnx";
constexpr int64_t kRecordOverheadBytes = static_cast<int64_t>(internal::kRecordBytes);
constexpr size_t kMaxProblems = 100;

// A chunk encoded and checked before the writer lock is taken (the "prepare" step).
struct PreparedChunk {
  DocumentId doc_id = 0;
  int64_t position = 0;
  int64_t n_tokens = 0;
  std::string content;
  std::string embedding;
  std::string kv;      // empty in a bank without K/V
  std::string states;  // empty in a bank without states
  int64_t stored_bytes() const {
    return static_cast<int64_t>(content.size() + embedding.size() + kv.size() + states.size()) +
           kRecordOverheadBytes;
  }
};

void AddProblem(VerifyReport* r, std::string msg) {
  ++r->problems;
  if (r->messages.size() < kMaxProblems) r->messages.push_back(std::move(msg));
}

}  // namespace

MemoryBank::MemoryBank(const MemoryBankOptions& options) : options_(options) {
  if (options_.logger == nullptr) options_.logger = DefaultNullLogger();
}

std::shared_lock<std::shared_mutex> MemoryBank::ReaderLock() const {
  std::lock_guard gate(gate_);
  return std::shared_lock(mu_);
}

std::unique_lock<std::shared_mutex> MemoryBank::WriterLock() const {
  std::lock_guard gate(gate_);
  return std::unique_lock(mu_);
}

MemoryBank::~MemoryBank() {
  Status s = Close();
  if (!s.ok()) MUNINN_LOG(options_.logger, kError) << "memory bank close: " << s;
}

StatusOr<std::unique_ptr<MemoryBank>> MemoryBank::Open(const MemoryBankOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<MemoryBank> bank(new MemoryBank(options));
  Status st = bank->OpenImpl();
  if (!st.ok()) {
    bank->closed_ = true;  // nothing to flush
    return st.WithContext("open memory bank" +
                          (options.in_memory ? std::string(" (in memory)") : " at " + options.path));
  }
  return bank;
}

Status MemoryBank::Repair(const std::string& path) { return ChunkStore::Repair(path); }

Status MemoryBank::OpenImpl() {
  ChunkStore::OpenOptions so;
  so.path = options_.path;
  so.in_memory = options_.in_memory;
  so.create_if_missing = options_.create_if_missing;
  so.sync = options_.sync == SyncPolicy::kSync;
  so.verify_checksums = options_.verify_on_open && !options_.in_memory;
  if (!options_.in_memory && options_.create_if_missing) {
    std::error_code ec;
    std::filesystem::create_directories(options_.path, ec);
    if (ec) return IoError("create directory " + options_.path + ": " + ec.message());
  }
  ASSIGN_OR_RETURN(store_, ChunkStore::Open(so));

  if (store_->existed()) {
    std::string bytes;
    RETURN_IF_ERROR(store_->Get(Cf::kDefault, "bank", &bytes));
    ASSIGN_OR_RETURN(internal::BankHeader h, internal::DecodeBankHeader(bytes));
    auto mismatch = [](const char* what, const std::string& stored, const std::string& asked) {
      return InvalidArgumentError(std::string("the bank stores ") + what + " " + stored +
                                  " but the options ask for " + asked +
                                  "; open it with matching options (or 0 to take the bank's)");
    };
    if (options_.dim != 0 && options_.dim != h.dim) {
      return mismatch("dim", std::to_string(h.dim), std::to_string(options_.dim));
    }
    if (options_.n_head_kv != 0 && options_.n_head_kv != h.n_head_kv) {
      return mismatch("n_head_kv", std::to_string(h.n_head_kv), std::to_string(options_.n_head_kv));
    }
    if (options_.head_dim != 0 && options_.head_dim != h.head_dim) {
      return mismatch("head_dim", std::to_string(h.head_dim), std::to_string(options_.head_dim));
    }
    if (options_.kv_dtype != DType::kCount && options_.kv_dtype != h.kv_dtype) {
      return mismatch("kv dtype", std::string(DTypeName(h.kv_dtype)),
                      std::string(DTypeName(options_.kv_dtype)));
    }
    if (!options_.index_factory.empty() && options_.index_factory != h.index_factory) {
      return mismatch("index factory", h.index_factory, options_.index_factory);
    }
    auto layer_list = [](const std::vector<int32_t>& v) {
      std::string out = "[";
      for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::to_string(v[i]);
      return out + "]";
    };
    if (!options_.kv_layers.empty() && options_.kv_layers != h.kv_layers) {
      return mismatch("the K/V of layers", layer_list(h.kv_layers), layer_list(options_.kv_layers));
    }
    if (options_.state_dim != 0 && options_.state_dim != h.state_dim) {
      return mismatch("token states of width", std::to_string(h.state_dim),
                      std::to_string(options_.state_dim));
    }
    kv_layers_ = h.kv_layers;
    state_dim_ = h.state_dim;
    dim_ = h.dim;
    n_head_kv_ = h.n_head_kv;
    head_dim_ = h.head_dim;
    kv_dtype_ = h.kv_dtype;
    index_factory_ = h.index_factory;
    RETURN_IF_ERROR(store_->Get(Cf::kDefault, "state", &bytes));
    ASSIGN_OR_RETURN(internal::BankState state, internal::DecodeBankState(bytes));
    next_id_ = state.next_id;
    mutation_seq_ = state.mutation_seq;
    evicted_chunks_ = static_cast<int64_t>(state.evicted_chunks);
  } else {
    if (!options_.create_if_missing) {
      return NotFoundError("no memory bank here (create it, or set create_if_missing)");
    }
    if (options_.dim <= 0) return InvalidArgumentError("creating a bank needs dim > 0");
    if ((options_.n_head_kv > 0) != (options_.head_dim > 0) ||
        (options_.n_head_kv == 0 && !options_.kv_layers.empty())) {
      return InvalidArgumentError(
          "creating a bank needs n_head_kv and head_dim both > 0 (K/V per chunk) or both 0 with "
          "no kv_layers (a text-only bank)");
    }
    kv_layers_ = options_.kv_layers;
    state_dim_ = options_.state_dim;
    dim_ = options_.dim;
    n_head_kv_ = options_.n_head_kv;
    head_dim_ = options_.head_dim;
    kv_dtype_ = options_.kv_dtype == DType::kCount ? DType::kBF16 : options_.kv_dtype;
    index_factory_ = options_.index_factory.empty() ? "Flat" : options_.index_factory;
    if (!internal::IsSupportedKvDType(kv_dtype_)) {
      return UnimplementedError("K/V dtype " + std::string(DTypeName(kv_dtype_)) +
                                " is not available in this build");
    }
    if (n_head_kv_ > 0) {
      RETURN_IF_ERROR(internal::KvHalfBytes(kv_dtype_, n_head_kv_, 1, head_dim_).status());
    }
    // Reject a bad factory string before anything is written.
    internal::VectorIndexOptions vo;
    vo.dim = dim_;
    vo.factory = index_factory_;
    RETURN_IF_ERROR(VectorIndex::Create(vo).status());
    internal::BankHeader h;
    h.dim = dim_;
    h.n_head_kv = n_head_kv_;
    h.head_dim = head_dim_;
    h.kv_dtype = kv_dtype_;
    h.index_factory = index_factory_;
    h.kv_layers = kv_layers_;
    h.state_dim = state_dim_;
    internal::WriteBatchBuilder batch = store_->NewBatch();
    batch.Put(Cf::kDefault, "bank", internal::EncodeBankHeader(h));
    batch.Put(Cf::kDefault, "state", internal::EncodeBankState({}));
    RETURN_IF_ERROR(store_->Write(&batch));
  }

  n_kv_rows_ = n_head_kv_ == 0 ? 0
               : n_head_kv_ * std::max<int64_t>(1, static_cast<int64_t>(kv_layers_.size()));
  // The records column family is small (56 bytes a chunk): load all bookkeeping into memory.
  const int64_t emb_bytes = dim_ * 4 + 4;
  RETURN_IF_ERROR(store_->ForEach(Cf::kRecords, "", [&](std::string_view k, std::string_view v) {
    ASSIGN_OR_RETURN(uint64_t id, internal::ParseIdKey(k));
    StatusOr<internal::RecordValue> rv = internal::DecodeRecord(v);
    if (!rv.ok()) {
      return rv.status().WithContext("chunk " + std::to_string(id) +
                                     " (run `muninn bank verify` for a full report)");
    }
    if (id == 0 || id >= next_id_) {
      return DataLossError("chunk id " + std::to_string(id) + " is beyond the bank's next id " +
                           std::to_string(next_id_));
    }
    Meta& m = metas_[id];
    m.doc_id = rv->doc_id;
    m.position = rv->position;
    m.n_tokens = rv->n_tokens;
    m.kv_bytes = static_cast<int64_t>(rv->kv_bytes);
    m.states_bytes = static_cast<int64_t>(rv->states_bytes);
    m.stored_bytes = static_cast<int64_t>(rv->kv_bytes + rv->content_bytes + rv->states_bytes) +
                     emb_bytes + kRecordOverheadBytes;
    m.persisted_count = rv->retrieval_count;
    m.retrieval_count.store(rv->retrieval_count, std::memory_order_relaxed);
    ++doc_chunks_[m.doc_id];
    n_tokens_ += m.n_tokens;
    stored_bytes_ += m.stored_bytes;
    kv_bytes_ += m.kv_bytes;
    states_bytes_ += m.states_bytes;
    return Status::Ok();
  }));
  RETURN_IF_ERROR(LoadDocumentsLocked());
  return LoadOrRebuildIndex();
}

Status MemoryBank::LoadDocumentsLocked() {
  RETURN_IF_ERROR(store_->ForEach(
      Cf::kDefault, internal::kDocumentKeyPrefix, [&](std::string_view k, std::string_view v) {
        ASSIGN_OR_RETURN(DocumentId id, internal::ParseDocumentKey(k));
        StatusOr<DocumentRecord> r = internal::DecodeDocumentRecord(v);
        if (!r.ok()) {
          return r.status().WithContext("document " + std::to_string(id) +
                                        " (run `muninn bank verify` for a full report)");
        }
        if (r->id != id) {
          return DataLossError("document record under key " + std::to_string(id) + " names id " +
                               std::to_string(r->id));
        }
        doc_records_[id] = std::move(r).value();
        return Status::Ok();
      }));
  std::string bytes;
  Status st = store_->Get(Cf::kDefault, std::string(internal::kDocumentStateKey), &bytes);
  if (st.ok()) {
    ASSIGN_OR_RETURN(next_doc_id_, internal::DecodeDocumentState(bytes));
  } else if (st.code() != StatusCode::kNotFound) {
    return st;
  }
  // A bank from before document records, or one whose writer crashed between appending chunks
  // and recording them, still never hands out an id its chunks use.
  auto raise = [&](DocumentId id) {
    if (id < kFirstReservedDocumentId && id >= next_doc_id_) next_doc_id_ = id + 1;
  };
  for (const auto& [id, n] : doc_chunks_) raise(id);
  for (const auto& [id, r] : doc_records_) raise(id);
  if (next_doc_id_ == 0) next_doc_id_ = 1;
  return Status::Ok();
}

DocumentRecord MemoryBank::DocumentOfLocked(DocumentId id) const {
  DocumentRecord r;
  auto it = doc_records_.find(id);
  if (it != doc_records_.end()) {
    r = it->second;
  } else {
    r.id = id;
    r.has_record = false;
    r.state = DocumentState::kPartial;
  }
  auto c = doc_chunks_.find(id);
  r.n_chunks = c == doc_chunks_.end() ? 0 : c->second;
  return r;
}

StatusOr<DocumentId> MemoryBank::BeginDocument(std::string_view name) {
  if (name.size() > internal::kMaxDocumentNameBytes) {
    return InvalidArgumentError("document name of " + std::to_string(name.size()) +
                                " bytes; at most " +
                                std::to_string(internal::kMaxDocumentNameBytes) + " are stored");
  }
  auto lock = WriterLock();
  if (closed_) return FailedPreconditionError("memory bank is closed");
  if (next_doc_id_ >= kFirstReservedDocumentId) {
    return ResourceExhaustedError("the bank has handed out every document id");
  }
  DocumentRecord r;
  r.id = next_doc_id_;
  r.name = std::string(name);
  r.state = DocumentState::kPartial;
  internal::WriteBatchBuilder batch = store_->NewBatch();
  batch.Put(Cf::kDefault, internal::DocumentKey(r.id), internal::EncodeDocumentRecord(r));
  batch.Put(Cf::kDefault, internal::kDocumentStateKey, internal::EncodeDocumentState(r.id + 1));
  RETURN_IF_ERROR(store_->Write(&batch));
  next_doc_id_ = r.id + 1;
  doc_records_[r.id] = r;
  return r.id;
}

Status MemoryBank::PutDocument(const DocumentRecord& record) {
  if (record.name.size() > internal::kMaxDocumentNameBytes) {
    return InvalidArgumentError("document name of " + std::to_string(record.name.size()) +
                                " bytes; at most " +
                                std::to_string(internal::kMaxDocumentNameBytes) + " are stored");
  }
  if (record.id == 0 || record.tokens < 0) {
    return InvalidArgumentError("a document record needs an id > 0 and tokens >= 0");
  }
  auto lock = WriterLock();
  if (closed_) return FailedPreconditionError("memory bank is closed");
  DocumentRecord r = record;
  r.n_chunks = 0;
  r.has_record = true;
  internal::WriteBatchBuilder batch = store_->NewBatch();
  batch.Put(Cf::kDefault, internal::DocumentKey(r.id), internal::EncodeDocumentRecord(r));
  const DocumentId next =
      r.id < kFirstReservedDocumentId && r.id >= next_doc_id_ ? r.id + 1 : next_doc_id_;
  if (next != next_doc_id_) {
    batch.Put(Cf::kDefault, internal::kDocumentStateKey, internal::EncodeDocumentState(next));
  }
  RETURN_IF_ERROR(store_->Write(&batch));
  next_doc_id_ = next;
  doc_records_[r.id] = std::move(r);
  return Status::Ok();
}

StatusOr<DocumentRecord> MemoryBank::GetDocument(DocumentId id) const {
  auto lock = ReaderLock();
  if (closed_) return FailedPreconditionError("memory bank is closed");
  if (doc_records_.count(id) == 0 && doc_chunks_.count(id) == 0) {
    return NotFoundError("no document " + std::to_string(id) + " in the bank");
  }
  return DocumentOfLocked(id);
}

std::vector<DocumentRecord> MemoryBank::ListDocuments() const {
  auto lock = ReaderLock();
  std::vector<DocumentId> ids;
  for (const auto& [id, r] : doc_records_) ids.push_back(id);
  for (const auto& [id, n] : doc_chunks_) {
    if (id < kFirstReservedDocumentId && doc_records_.count(id) == 0) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  std::vector<DocumentRecord> out;
  out.reserve(ids.size());
  for (DocumentId id : ids) out.push_back(DocumentOfLocked(id));
  return out;
}

DocumentId MemoryBank::NextDocumentId() const {
  auto lock = ReaderLock();
  return next_doc_id_;
}

Status MemoryBank::LoadOrRebuildIndex() {
  internal::VectorIndexOptions vo;
  vo.dim = dim_;
  vo.factory = index_factory_;
  vo.hnsw_ef_search = options_.hnsw_ef_search;
  vo.train_min_chunks = options_.train_min_chunks;
  vo.overfetch_factor = options_.overfetch_factor;
  bool must_persist = false;
  if (!options_.in_memory) {
    const std::string path = options_.path + "/" + kIndexFileName;
    uint64_t seq = 0;
    StatusOr<std::unique_ptr<VectorIndex>> loaded = VectorIndex::Load(path, vo, &seq);
    if (loaded.ok()) {
      index_ = std::move(loaded).value();
      index_persisted_seq_ = seq;
      index_recovery_ = "loaded";
      if (seq != mutation_seq_) {
        MUNINN_LOG(options_.logger, kInfo) << "memory bank index reflects mutation " << seq
                                           << ", the bank is at " << mutation_seq_
                                           << ": catching up from stored embeddings";
        must_persist = true;
      }
    } else {
      index_recovery_ = metas_.empty() && loaded.status().code() == StatusCode::kNotFound
                            ? "created"
                            : "rebuilt (" + std::string(loaded.status().message()) + ")";
      if (loaded.status().code() != StatusCode::kNotFound || !metas_.empty()) {
        MUNINN_LOG(options_.logger, kWarning)
            << "memory bank index unusable (" << loaded.status() << "); rebuilding it from "
            << metas_.size() << " stored embeddings";
      }
      must_persist = true;
    }
  }
  if (!index_) {
    ASSIGN_OR_RETURN(index_, VectorIndex::Create(vo));
  }
  // Reconcile: the index must hold exactly the live chunks (plus tombstones it cannot drop).
  std::vector<int64_t> extra;
  std::unordered_set<int64_t> present;
  for (int64_t id : index_->Ids()) {
    present.insert(id);
    if (metas_.count(static_cast<ChunkId>(id)) == 0) extra.push_back(id);
  }
  std::vector<ChunkId> missing;
  for (const auto& [id, m] : metas_) {
    if (present.count(static_cast<int64_t>(id)) == 0) missing.push_back(id);
  }
  std::sort(missing.begin(), missing.end());
  RETURN_IF_ERROR(index_->Remove(extra));
  constexpr size_t kBatch = 4096;
  std::vector<float> vecs;
  std::vector<int64_t> ids;
  for (size_t b = 0; b < missing.size(); b += kBatch) {
    const size_t n = std::min(kBatch, missing.size() - b);
    vecs.resize(n * static_cast<size_t>(dim_));
    ids.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const ChunkId id = missing[b + i];
      ids[i] = static_cast<int64_t>(id);
      RETURN_IF_ERROR(store_->GetWith(Cf::kEmbeddings, internal::IdKey(id), [&](std::string_view v) {
        return internal::DecodeEmbedding(v, dim_, vecs.data() + i * static_cast<size_t>(dim_));
      }).WithContext("embedding of chunk " + std::to_string(id)));
    }
    RETURN_IF_ERROR(index_->Add(static_cast<int64_t>(n), vecs.data(), ids.data()));
  }
  if (!extra.empty() || !missing.empty()) {
    MUNINN_LOG(options_.logger, kInfo) << "memory bank index reconciled: +" << missing.size()
                                       << " -" << extra.size();
    if (index_recovery_ == "loaded") {
      index_recovery_ = "caught up (+" + std::to_string(missing.size()) + " -" +
                        std::to_string(extra.size()) + ")";
    }
    must_persist = true;
  }
  if (index_->tombstones() > 0 &&
      static_cast<double>(index_->tombstones()) >
          options_.max_tombstone_fraction * static_cast<double>(index_->ntotal())) {
    RETURN_IF_ERROR(RebuildIndexLocked());
    must_persist = true;
  }
  if (must_persist && !options_.in_memory) {
    Status s = PersistIndexLocked();
    // A read-only disk must not make the bank unopenable: the index is derived state.
    if (!s.ok()) MUNINN_LOG(options_.logger, kWarning) << "memory bank index not saved: " << s;
  }
  if (options_.in_memory) {
    index_persisted_seq_ = mutation_seq_;
    index_recovery_ = "in memory";
  }
  return Status::Ok();
}

Status MemoryBank::RebuildIndexLocked() {
  internal::VectorIndexOptions vo;
  vo.dim = dim_;
  vo.factory = index_factory_;
  vo.hnsw_ef_search = options_.hnsw_ef_search;
  vo.train_min_chunks = options_.train_min_chunks;
  vo.overfetch_factor = options_.overfetch_factor;
  ASSIGN_OR_RETURN(std::unique_ptr<VectorIndex> fresh, VectorIndex::Create(vo));
  std::vector<int64_t> ids;
  std::vector<float> vecs;
  ids.reserve(metas_.size());
  for (const auto& [id, m] : metas_) ids.push_back(static_cast<int64_t>(id));
  std::sort(ids.begin(), ids.end());
  vecs.resize(ids.size() * static_cast<size_t>(dim_));
  for (size_t i = 0; i < ids.size(); ++i) {
    RETURN_IF_ERROR(store_->GetWith(Cf::kEmbeddings, internal::IdKey(static_cast<uint64_t>(ids[i])),
                                    [&](std::string_view v) {
                                      return internal::DecodeEmbedding(
                                          v, dim_, vecs.data() + i * static_cast<size_t>(dim_));
                                    }));
  }
  RETURN_IF_ERROR(fresh->Add(static_cast<int64_t>(ids.size()), vecs.data(), ids.data()));
  index_ = std::move(fresh);
  index_persisted_seq_ = ~uint64_t{0};  // the file on disk no longer describes this index
  return Status::Ok();
}

Status MemoryBank::PersistIndexLocked() {
  if (options_.in_memory) {
    index_persisted_seq_ = mutation_seq_;
    return Status::Ok();
  }
  RETURN_IF_ERROR(index_->Save(options_.path + "/" + kIndexFileName, mutation_seq_));
  index_persisted_seq_ = mutation_seq_;
  return Status::Ok();
}

Status MemoryBank::FlushLocked() {
  internal::WriteBatchBuilder batch = store_->NewBatch();
  std::vector<std::pair<Meta*, uint32_t>> written;
  for (auto& [id, m] : metas_) {
    const uint32_t c = m.retrieval_count.load(std::memory_order_relaxed);
    if (c == m.persisted_count) continue;
    internal::RecordValue rv;
    rv.doc_id = m.doc_id;
    rv.position = m.position;
    rv.n_tokens = static_cast<uint32_t>(m.n_tokens);
    rv.retrieval_count = c;
    rv.kv_bytes = static_cast<uint64_t>(m.kv_bytes);
    rv.states_bytes = static_cast<uint64_t>(m.states_bytes);
    rv.content_bytes = static_cast<uint64_t>(m.stored_bytes - m.kv_bytes - m.states_bytes -
                                             (dim_ * 4 + 4) - kRecordOverheadBytes);
    batch.Put(Cf::kRecords, internal::IdKey(id), internal::EncodeRecord(rv));
    written.emplace_back(&m, c);
  }
  if (!written.empty()) {
    RETURN_IF_ERROR(store_->Write(&batch));
    for (auto& [m, c] : written) m->persisted_count = c;
  }
  if (options_.sync == SyncPolicy::kNoSync) RETURN_IF_ERROR(store_->SyncWal());
  if (index_persisted_seq_ != mutation_seq_) RETURN_IF_ERROR(PersistIndexLocked());
  return Status::Ok();
}

Status MemoryBank::Close() {
  auto lock = WriterLock();
  if (closed_) return Status::Ok();
  closed_ = true;
  Status s = FlushLocked();
  Status c = store_->Close();
  return s.ok() ? c : s;
}

Status MemoryBank::Flush() {
  auto lock = WriterLock();
  if (closed_) return FailedPreconditionError("memory bank is closed");
  return FlushLocked();
}

Status MemoryBank::Compact() {
  auto lock = WriterLock();
  if (closed_) return FailedPreconditionError("memory bank is closed");
  if (index_->tombstones() > 0) RETURN_IF_ERROR(RebuildIndexLocked());
  RETURN_IF_ERROR(FlushLocked());
  return store_->CompactAll();
}

StatusOr<std::vector<ChunkId>> MemoryBank::PlanEvictionLocked(int64_t add_tokens,
                                                              int64_t add_bytes) const {
  internal::Capacity cap{options_.capacity_tokens, options_.capacity_bytes};
  if (cap.tokens == 0 && cap.bytes == 0) return std::vector<ChunkId>{};
  if ((cap.tokens == 0 || n_tokens_ + add_tokens <= cap.tokens) &&
      (cap.bytes == 0 || stored_bytes_ + add_bytes <= cap.bytes) &&
      (cap.tokens == 0 || add_tokens <= cap.tokens) && (cap.bytes == 0 || add_bytes <= cap.bytes)) {
    return std::vector<ChunkId>{};  // fast path: no need to list the chunks
  }
  std::vector<internal::EvictionCandidate> by_age;
  by_age.reserve(metas_.size());
  for (const auto& [id, m] : metas_) {
    by_age.push_back({id, m.n_tokens, m.stored_bytes,
                      m.retrieval_count.load(std::memory_order_relaxed)});
  }
  std::sort(by_age.begin(), by_age.end(),
            [](const auto& a, const auto& b) { return a.id < b.id; });
  return internal::PlanEviction(by_age, cap, add_tokens, add_bytes, options_.eviction,
                                options_.frequency);
}

StatusOr<std::vector<ChunkId>> MemoryBank::Append(std::span<const ChunkInput> chunks) {
  // Prepare: check and encode everything without the lock; nothing changes if this fails.
  std::vector<PreparedChunk> prepared(chunks.size());
  int64_t add_tokens = 0, add_bytes = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const ChunkInput& c = chunks[i];
    const std::string where = "chunk " + std::to_string(i) + " of the batch: ";
    if (static_cast<int64_t>(c.embedding.size()) != dim_) {
      return InvalidArgumentError(where + "embedding has " + std::to_string(c.embedding.size()) +
                                  " values, the bank's dimension is " + std::to_string(dim_));
    }
    for (float x : c.embedding) {
      if (!std::isfinite(x)) return InvalidArgumentError(where + "embedding is not finite");
    }
    if (c.position < 0) return InvalidArgumentError(where + "negative position");
    if (c.tokens.empty() || c.tokens.size() > (1u << 30) || c.text.size() > (1u << 30)) {
      return InvalidArgumentError(where + "needs 1..2^30 tokens and at most 1 GiB of text");
    }
    const int64_t nt = static_cast<int64_t>(c.tokens.size());
    PreparedChunk& p = prepared[i];
    if (n_kv_rows_ == 0) {
      if (c.k.defined() || c.v.defined()) {
        return InvalidArgumentError(where + "this bank stores no K/V (a text-only bank), but the "
                                    "chunk carries K/V");
      }
    } else {
      if (!c.k.defined() || c.k.ndim() != 3 || c.k.dim(0) != n_kv_rows_ || c.k.dim(1) != nt ||
          c.k.dim(2) != head_dim_) {
        return InvalidArgumentError(where + "K must be [" + std::to_string(n_kv_rows_) + ", " +
                                    std::to_string(nt) + ", " + std::to_string(head_dim_) +
                                    "] (K/V layers x heads, tokens, head_dim), got " +
                                    (c.k.defined() ? c.k.shape().ToString() : "nothing"));
      }
      StatusOr<std::string> kv = internal::EncodeKv(kv_dtype_, c.k, c.v);
      if (!kv.ok()) return kv.status().WithContext(where);
      p.kv = std::move(kv).value();
    }
    if (state_dim_ == 0) {
      if (!c.states.empty() || !c.next_tokens.empty()) {
        return InvalidArgumentError(where + "this bank stores no token states");
      }
    } else {
      if (static_cast<int64_t>(c.next_tokens.size()) != nt ||
          static_cast<int64_t>(c.states.size()) != nt * state_dim_) {
        return InvalidArgumentError(where + "token states must be [" + std::to_string(nt) + ", " +
                                    std::to_string(state_dim_) + "] with " + std::to_string(nt) +
                                    " next tokens, got " + std::to_string(c.states.size()) +
                                    " values and " + std::to_string(c.next_tokens.size()) +
                                    " next tokens");
      }
      for (float x : c.states) {
        if (!std::isfinite(x)) return InvalidArgumentError(where + "token states are not finite");
      }
      p.states = internal::EncodeStates(c.states, c.next_tokens, state_dim_);
    }
    p.doc_id = c.doc_id;
    p.position = c.position;
    p.n_tokens = nt;
    p.content = internal::EncodeContent(c.tokens, c.text);
    p.embedding = internal::EncodeEmbedding(c.embedding);
    add_tokens += nt;
    add_bytes += p.stored_bytes();
  }
  if (prepared.empty()) return std::vector<ChunkId>{};

  // Apply: one RocksDB batch (evictions + new chunks + state), then the in-memory mirror.
  auto lock = WriterLock();
  if (closed_) return FailedPreconditionError("memory bank is closed");
  ASSIGN_OR_RETURN(std::vector<ChunkId> evict, PlanEvictionLocked(add_tokens, add_bytes));
  internal::WriteBatchBuilder batch = store_->NewBatch();
  for (ChunkId id : evict) {
    const std::string key = internal::IdKey(id);
    for (Cf cf : {Cf::kRecords, Cf::kContent, Cf::kKv, Cf::kEmbeddings, Cf::kStates}) {
      batch.Delete(cf, key);
    }
    batch.Delete(Cf::kDocuments, internal::DocKey(metas_.at(id).doc_id, id));
  }
  std::vector<ChunkId> ids(prepared.size());
  for (size_t i = 0; i < prepared.size(); ++i) {
    const PreparedChunk& p = prepared[i];
    ids[i] = next_id_ + i;
    const std::string key = internal::IdKey(ids[i]);
    internal::RecordValue rv;
    rv.doc_id = p.doc_id;
    rv.position = p.position;
    rv.n_tokens = static_cast<uint32_t>(p.n_tokens);
    rv.kv_bytes = p.kv.size();
    rv.content_bytes = p.content.size();
    rv.states_bytes = p.states.size();
    batch.Put(Cf::kRecords, key, internal::EncodeRecord(rv));
    batch.Put(Cf::kContent, key, p.content);
    if (!p.kv.empty()) batch.Put(Cf::kKv, key, p.kv);
    if (!p.states.empty()) batch.Put(Cf::kStates, key, p.states);
    batch.Put(Cf::kEmbeddings, key, p.embedding);
    batch.Put(Cf::kDocuments, internal::DocKey(p.doc_id, ids[i]), "");
  }
  internal::BankState state;
  state.next_id = next_id_ + prepared.size();
  state.mutation_seq = mutation_seq_ + 1;
  state.evicted_chunks = static_cast<uint64_t>(evicted_chunks_) + evict.size();
  batch.Put(Cf::kDefault, "state", internal::EncodeBankState(state));
  RETURN_IF_ERROR(store_->Write(&batch));

  // Durable from here on: mirror it in memory and in the index.
  for (ChunkId id : evict) {
    auto it = metas_.find(id);
    n_tokens_ -= it->second.n_tokens;
    stored_bytes_ -= it->second.stored_bytes;
    kv_bytes_ -= it->second.kv_bytes;
    states_bytes_ -= it->second.states_bytes;
    if (--doc_chunks_[it->second.doc_id] == 0) doc_chunks_.erase(it->second.doc_id);
    metas_.erase(it);
  }
  std::vector<float> vecs(prepared.size() * static_cast<size_t>(dim_));
  for (size_t i = 0; i < prepared.size(); ++i) {
    const PreparedChunk& p = prepared[i];
    Meta& m = metas_[ids[i]];
    m.doc_id = p.doc_id;
    m.position = p.position;
    m.n_tokens = p.n_tokens;
    m.kv_bytes = static_cast<int64_t>(p.kv.size());
    m.states_bytes = static_cast<int64_t>(p.states.size());
    m.stored_bytes = p.stored_bytes();
    ++doc_chunks_[p.doc_id];
    n_tokens_ += m.n_tokens;
    stored_bytes_ += m.stored_bytes;
    kv_bytes_ += m.kv_bytes;
    states_bytes_ += m.states_bytes;
    std::memcpy(vecs.data() + i * static_cast<size_t>(dim_), chunks[i].embedding.data(),
                static_cast<size_t>(dim_) * sizeof(float));
  }
  next_id_ = state.next_id;
  mutation_seq_ = state.mutation_seq;
  evicted_chunks_ = static_cast<int64_t>(state.evicted_chunks);
  UpdateLexicalLocked(evict, ids, chunks);
  std::vector<int64_t> evict64(evict.begin(), evict.end());
  std::vector<int64_t> ids64(ids.begin(), ids.end());
  Status ist = index_->Remove(evict64);
  if (ist.ok()) ist = index_->Add(static_cast<int64_t>(ids.size()), vecs.data(), ids64.data());
  if (!ist.ok()) {
    // The chunks are durable; bring the derived index back in line before acknowledging.
    MUNINN_LOG(options_.logger, kWarning) << "memory bank index update failed (" << ist
                                          << "); rebuilding it";
    RETURN_IF_ERROR(RebuildIndexLocked().WithContext(
        "the append is durable but the index could not be rebuilt; reopen the bank"));
  }
  if (index_->tombstones() > 0 &&
      static_cast<double>(index_->tombstones()) >
          options_.max_tombstone_fraction * static_cast<double>(index_->ntotal())) {
    RETURN_IF_ERROR(RebuildIndexLocked());
  }
  if (!evict.empty() ||
      mutation_seq_ - index_persisted_seq_ >= static_cast<uint64_t>(options_.index_persist_interval)) {
    Status s = FlushLocked();  // counters of the survivors, and the index
    if (!s.ok()) MUNINN_LOG(options_.logger, kWarning) << "memory bank flush after append: " << s;
  }
  return ids;
}

StatusOr<int64_t> MemoryBank::DeleteDocument(DocumentId doc_id) {
  auto lock = WriterLock();
  if (closed_) return FailedPreconditionError("memory bank is closed");
  std::vector<ChunkId> ids;
  for (const auto& [id, m] : metas_) {
    if (m.doc_id == doc_id) ids.push_back(id);
  }
  const bool has_record = doc_records_.count(doc_id) > 0;
  if (ids.empty() && !has_record) return int64_t{0};
  std::sort(ids.begin(), ids.end());
  internal::WriteBatchBuilder batch = store_->NewBatch();
  if (has_record) batch.Delete(Cf::kDefault, internal::DocumentKey(doc_id));
  // Persist the id counter so that an id derived from chunks alone is not handed out again.
  batch.Put(Cf::kDefault, internal::kDocumentStateKey, internal::EncodeDocumentState(next_doc_id_));
  for (ChunkId id : ids) {
    const std::string key = internal::IdKey(id);
    for (Cf cf : {Cf::kRecords, Cf::kContent, Cf::kKv, Cf::kEmbeddings, Cf::kStates}) {
      batch.Delete(cf, key);
    }
    batch.Delete(Cf::kDocuments, internal::DocKey(doc_id, id));
  }
  internal::BankState state;
  state.next_id = next_id_;
  state.mutation_seq = mutation_seq_ + 1;
  state.evicted_chunks = static_cast<uint64_t>(evicted_chunks_);
  batch.Put(Cf::kDefault, "state", internal::EncodeBankState(state));
  RETURN_IF_ERROR(store_->Write(&batch));
  for (ChunkId id : ids) {
    auto it = metas_.find(id);
    n_tokens_ -= it->second.n_tokens;
    stored_bytes_ -= it->second.stored_bytes;
    kv_bytes_ -= it->second.kv_bytes;
    states_bytes_ -= it->second.states_bytes;
    metas_.erase(it);
  }
  doc_chunks_.erase(doc_id);
  doc_records_.erase(doc_id);
  mutation_seq_ = state.mutation_seq;
  UpdateLexicalLocked(ids, {}, {});
  std::vector<int64_t> ids64(ids.begin(), ids.end());
  Status ist = index_->Remove(ids64);
  const bool too_many_tombstones =
      index_->tombstones() > 0 &&
      static_cast<double>(index_->tombstones()) >
          options_.max_tombstone_fraction * static_cast<double>(index_->ntotal());
  if (!ist.ok() || too_many_tombstones) {
    RETURN_IF_ERROR(RebuildIndexLocked().WithContext(
        "the delete is durable but the index could not be rebuilt; reopen the bank"));
  }
  if (mutation_seq_ - index_persisted_seq_ >= static_cast<uint64_t>(options_.index_persist_interval)) {
    Status s = PersistIndexLocked();
    if (!s.ok()) MUNINN_LOG(options_.logger, kWarning) << "memory bank index not saved: " << s;
  }
  return static_cast<int64_t>(ids.size());
}

std::function<bool(int64_t)> MemoryBank::AcceptLocked(
    const SearchFilter& filter, std::unordered_set<DocumentId>* doc_set) const {
  const bool filtered =
      !filter.doc_ids.empty() || filter.before_position >= 0 || filter.before_id != 0;
  if (!filtered) return {};
  // Filters on many documents use a set; the common one-document filter stays a linear probe.
  if (filter.doc_ids.size() > 8) doc_set->insert(filter.doc_ids.begin(), filter.doc_ids.end());
  return [this, &filter, doc_set](int64_t id64) {
    const auto id = static_cast<ChunkId>(id64);
    if (filter.before_id != 0 && id >= filter.before_id) return false;
    auto it = metas_.find(id);
    if (it == metas_.end()) return false;
    const Meta& m = it->second;
    if (filter.before_position >= 0 && m.position >= filter.before_position) return false;
    if (!filter.doc_ids.empty()) {
      if (!doc_set->empty()) return doc_set->count(m.doc_id) != 0;
      return std::find(filter.doc_ids.begin(), filter.doc_ids.end(), m.doc_id) !=
             filter.doc_ids.end();
    }
    return true;
  };
}

Status MemoryBank::EnsureLexicalLocked() const {
  if (lexical_ != nullptr) return Status::Ok();
  auto index = std::make_unique<internal::LexicalIndex>();
  std::vector<int32_t> tokens;
  std::string text;
  for (const auto& [id, m] : metas_) {
    RETURN_IF_ERROR(store_->GetWith(Cf::kContent, internal::IdKey(id), [&](std::string_view v) {
      return internal::DecodeContent(v, &tokens, &text);
    }).WithContext("building the word index: chunk " + std::to_string(id)));
    index->Add(id, text);
  }
  lexical_ = std::move(index);
  return Status::Ok();
}

void MemoryBank::UpdateLexicalLocked(std::span<const ChunkId> removed,
                                     std::span<const ChunkId> added,
                                     std::span<const ChunkInput> added_chunks) {
  std::lock_guard<std::mutex> g(lexical_mu_);
  if (lexical_ == nullptr) return;  // not built yet: the first search reads the stored texts
  for (ChunkId id : removed) lexical_->Remove(id);
  for (size_t i = 0; i < added.size(); ++i) lexical_->Add(added[i], added_chunks[i].text);
  if (lexical_->dead_postings() > lexical_->postings() / 4) lexical_->Compact();
}

StatusOr<std::vector<SearchHit>> MemoryBank::SearchText(std::string_view query, int64_t k,
                                                        const SearchFilter& filter,
                                                        bool count_retrievals) {
  if (k < 0) return InvalidArgumentError("text search: k must be >= 0");
  auto lock = ReaderLock();
  if (closed_) return FailedPreconditionError("memory bank is closed");
  std::vector<SearchHit> out;
  if (k == 0) return out;
  std::unordered_set<DocumentId> doc_set;
  const std::function<bool(int64_t)> accept = AcceptLocked(filter, &doc_set);
  std::vector<internal::LexicalHit> raw;
  {
    std::lock_guard<std::mutex> g(lexical_mu_);
    RETURN_IF_ERROR(EnsureLexicalLocked());
    raw = lexical_->Search(query, k, accept ? [&](uint64_t id) {
      return accept(static_cast<int64_t>(id));
    } : std::function<bool(uint64_t)>());
  }
  for (const internal::LexicalHit& h : raw) {
    const Meta& m = metas_.at(h.id);
    out.push_back({h.id, h.score, m.doc_id, m.position, m.n_tokens});
    if (count_retrievals) m.retrieval_count.fetch_add(1, std::memory_order_relaxed);
  }
  return out;
}

StatusOr<std::vector<std::vector<SearchHit>>> MemoryBank::Search(std::span<const float> queries,
                                                                 int64_t n_queries, int64_t k,
                                                                 const SearchFilter& filter,
                                                                 bool count_retrievals) {
  if (n_queries < 0 || k < 0) return InvalidArgumentError("search: n_queries and k must be >= 0");
  if (static_cast<int64_t>(queries.size()) != n_queries * dim_) {
    return InvalidArgumentError("search: got " + std::to_string(queries.size()) +
                                " query values, want n_queries * dim = " +
                                std::to_string(n_queries * dim_));
  }
  auto lock = ReaderLock();
  if (closed_) return FailedPreconditionError("memory bank is closed");
  std::unordered_set<DocumentId> doc_set;
  const std::function<bool(int64_t)> accept = AcceptLocked(filter, &doc_set);
  std::vector<std::vector<internal::IndexHit>> raw;
  RETURN_IF_ERROR(index_->Search(queries.data(), n_queries, k, accept, &raw));
  std::vector<std::vector<SearchHit>> out(raw.size());
  for (size_t q = 0; q < raw.size(); ++q) {
    for (const internal::IndexHit& h : raw[q]) {
      auto it = metas_.find(static_cast<ChunkId>(h.id));
      MUNINN_CHECK(it != metas_.end()) << "index returned chunk " << h.id << " unknown to the bank";
      const Meta& m = it->second;
      out[q].push_back({it->first, h.score, m.doc_id, m.position, m.n_tokens});
      if (count_retrievals) m.retrieval_count.fetch_add(1, std::memory_order_relaxed);
    }
  }
  return out;
}

StatusOr<FetchedKV> MemoryBank::FetchKV(std::span<const ChunkId> ids_in, DType out_dtype) const {
  if (out_dtype != DType::kF32 && out_dtype != kv_dtype_) {
    return InvalidArgumentError("FetchKV: out_dtype must be f32 or the bank's " +
                                std::string(DTypeName(kv_dtype_)));
  }
  if (n_kv_rows_ == 0) {
    return FailedPreconditionError("this memory bank stores no K/V (a text-only bank): use a "
                                   "memory mode that reads text, or a bank made for K/V");
  }
  std::vector<ChunkId> ids(ids_in.begin(), ids_in.end());
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  auto lock = ReaderLock();
  if (closed_) return FailedPreconditionError("memory bank is closed");
  FetchedKV out;
  int64_t total = 0;
  for (ChunkId id : ids) {
    auto it = metas_.find(id);
    if (it == metas_.end()) return NotFoundError("FetchKV: no chunk " + std::to_string(id));
    out.lengths.push_back(it->second.n_tokens);
    total += it->second.n_tokens;
  }
  out.ids = ids;
  ASSIGN_OR_RETURN(out.k, Tensor::Empty(out_dtype, Shape{n_kv_rows_, total, head_dim_}));
  ASSIGN_OR_RETURN(out.v, Tensor::Empty(out_dtype, Shape{n_kv_rows_, total, head_dim_}));
  const size_t src_row = *RowBytes(kv_dtype_, head_dim_);
  const size_t dst_row = *RowBytes(out_dtype, head_dim_);
  int64_t t0 = 0;
  for (size_t c = 0; c < ids.size(); ++c) {
    const int64_t nt = out.lengths[c];
    RETURN_IF_ERROR(store_->GetWith(Cf::kKv, internal::IdKey(ids[c]), [&](std::string_view v) -> Status {
      ASSIGN_OR_RETURN(internal::KvHeader h, internal::DecodeKvHeader(v));
      if (h.dtype != kv_dtype_ || h.n_head_kv != n_kv_rows_ || h.head_dim != head_dim_ ||
          h.n_tokens != nt) {
        return DataLossError("K/V blob of chunk " + std::to_string(ids[c]) +
                             " does not match its record or the bank's shape");
      }
      // RocksDB checks its block and blob checksums on read; the payload CRC is left to Verify.
      const char* payload = v.data() + internal::kKvHeaderBytes;
      for (int half = 0; half < 2; ++half) {
        const Tensor& dst = half == 0 ? out.k : out.v;
        for (int64_t hd = 0; hd < n_kv_rows_; ++hd) {
          const char* src = payload + (static_cast<size_t>(half * n_kv_rows_ + hd) *
                                       static_cast<size_t>(nt)) * src_row;
          char* d = static_cast<char*>(dst.data()) +
                    (static_cast<size_t>(hd) * static_cast<size_t>(total) +
                     static_cast<size_t>(t0)) * dst_row;
          if (out_dtype == kv_dtype_) {
            std::memcpy(d, src, static_cast<size_t>(nt) * src_row);
          } else {
            for (int64_t t = 0; t < nt; ++t) {
              internal::DequantizeKvRow(kv_dtype_, src + static_cast<size_t>(t) * src_row,
                                        reinterpret_cast<float*>(d + static_cast<size_t>(t) * dst_row),
                                        head_dim_);
            }
          }
        }
      }
      return Status::Ok();
    }).WithContext("FetchKV chunk " + std::to_string(ids[c])));
    t0 += nt;
  }
  return out;
}

StatusOr<FetchedStates> MemoryBank::FetchStates(std::span<const ChunkId> ids_in) const {
  if (state_dim_ == 0) {
    return FailedPreconditionError("this memory bank stores no token states (kNN-LM needs a bank "
                                   "made with state_dim > 0)");
  }
  std::vector<ChunkId> ids(ids_in.begin(), ids_in.end());
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  auto lock = ReaderLock();
  if (closed_) return FailedPreconditionError("memory bank is closed");
  FetchedStates out;
  int64_t total = 0;
  for (ChunkId id : ids) {
    auto it = metas_.find(id);
    if (it == metas_.end()) return NotFoundError("FetchStates: no chunk " + std::to_string(id));
    out.lengths.push_back(it->second.n_tokens);
    out.positions.push_back(it->second.position);
    total += it->second.n_tokens;
  }
  out.ids = ids;
  out.states.resize(static_cast<size_t>(total * state_dim_));
  out.next_tokens.resize(static_cast<size_t>(total));
  int64_t t0 = 0;
  for (size_t c = 0; c < ids.size(); ++c) {
    const int64_t nt = out.lengths[c];
    RETURN_IF_ERROR(store_->GetWith(Cf::kStates, internal::IdKey(ids[c]), [&](std::string_view v) {
      return internal::DecodeStates(v, nt, state_dim_, out.states.data() + t0 * state_dim_,
                                    out.next_tokens.data() + t0);
    }).WithContext("FetchStates chunk " + std::to_string(ids[c])));
    t0 += nt;
  }
  return out;
}

ChunkInfo MemoryBank::InfoOf(ChunkId id, const Meta& m) const {
  ChunkInfo info;
  info.id = id;
  info.doc_id = m.doc_id;
  info.position = m.position;
  info.n_tokens = m.n_tokens;
  info.retrieval_count = m.retrieval_count.load(std::memory_order_relaxed);
  info.stored_bytes = m.stored_bytes;
  return info;
}

StatusOr<ChunkInfo> MemoryBank::Info(ChunkId id) const {
  auto lock = ReaderLock();
  auto it = metas_.find(id);
  if (it == metas_.end()) return NotFoundError("no chunk " + std::to_string(id));
  return InfoOf(id, it->second);
}

std::vector<ChunkInfo> MemoryBank::ListChunks() const {
  auto lock = ReaderLock();
  std::vector<ChunkInfo> out;
  out.reserve(metas_.size());
  for (const auto& [id, m] : metas_) out.push_back(InfoOf(id, m));
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

StatusOr<ChunkRecord> MemoryBank::GetChunk(ChunkId id) const {
  auto lock = ReaderLock();
  if (closed_) return FailedPreconditionError("memory bank is closed");
  auto it = metas_.find(id);
  if (it == metas_.end()) return NotFoundError("no chunk " + std::to_string(id));
  ChunkRecord rec;
  rec.info = InfoOf(id, it->second);
  const std::string key = internal::IdKey(id);
  const std::string ctx = "chunk " + std::to_string(id);
  RETURN_IF_ERROR(store_->GetWith(Cf::kContent, key, [&](std::string_view v) {
    return internal::DecodeContent(v, &rec.tokens, &rec.text);
  }).WithContext(ctx));
  rec.embedding.resize(static_cast<size_t>(dim_));
  RETURN_IF_ERROR(store_->GetWith(Cf::kEmbeddings, key, [&](std::string_view v) {
    return internal::DecodeEmbedding(v, dim_, rec.embedding.data());
  }).WithContext(ctx));
  if (n_kv_rows_ == 0) {
    if (static_cast<int64_t>(rec.tokens.size()) != rec.info.n_tokens) {
      return DataLossError(ctx + ": token count differs between record and content");
    }
    return rec;
  }
  std::string kv;
  RETURN_IF_ERROR(store_->Get(Cf::kKv, key, &kv).WithContext(ctx));
  RETURN_IF_ERROR(internal::VerifyKv(kv).WithContext(ctx));
  lock.unlock();
  ASSIGN_OR_RETURN(internal::KvHeader h, internal::DecodeKvHeader(kv));
  if (h.n_tokens != rec.info.n_tokens || static_cast<int64_t>(rec.tokens.size()) != h.n_tokens) {
    return DataLossError(ctx + ": token count differs between record, content and K/V");
  }
  ASSIGN_OR_RETURN(rec.k, Tensor::Empty(DType::kF32, Shape{h.n_head_kv, h.n_tokens, h.head_dim}));
  ASSIGN_OR_RETURN(rec.v, Tensor::Empty(DType::kF32, Shape{h.n_head_kv, h.n_tokens, h.head_dim}));
  const size_t row = *RowBytes(h.dtype, h.head_dim);
  const char* src = kv.data() + internal::kKvHeaderBytes;
  const int64_t rows = h.n_head_kv * h.n_tokens;
  for (int64_t r = 0; r < rows; ++r) {
    internal::DequantizeKvRow(h.dtype, src + static_cast<size_t>(r) * row,
                              rec.k.data_as<float>() + r * h.head_dim, h.head_dim);
    internal::DequantizeKvRow(h.dtype, src + static_cast<size_t>(rows + r) * row,
                              rec.v.data_as<float>() + r * h.head_dim, h.head_dim);
  }
  return rec;
}

StatusOr<VerifyReport> MemoryBank::Verify() const {
  auto lock = ReaderLock();
  if (closed_) return FailedPreconditionError("memory bank is closed");
  VerifyReport report;
  std::unordered_set<ChunkId> seen;
  std::vector<float> emb(static_cast<size_t>(dim_)), rec_vec(static_cast<size_t>(dim_));
  RETURN_IF_ERROR(store_->ForEach(Cf::kRecords, "", [&](std::string_view k, std::string_view v) {
    ++report.records_checked;
    StatusOr<uint64_t> id = internal::ParseIdKey(k);
    if (!id.ok()) {
      AddProblem(&report, "records: " + std::string(id.status().message()));
      return Status::Ok();
    }
    const std::string name = "chunk " + std::to_string(*id) + ": ";
    seen.insert(*id);
    StatusOr<internal::RecordValue> rv = internal::DecodeRecord(v);
    if (!rv.ok()) {
      AddProblem(&report, name + std::string(rv.status().message()));
      return Status::Ok();
    }
    auto it = metas_.find(*id);
    if (it == metas_.end() || it->second.doc_id != rv->doc_id ||
        it->second.position != rv->position || it->second.n_tokens != rv->n_tokens) {
      AddProblem(&report, name + "record disagrees with the bank's bookkeeping");
    }
    const std::string key = internal::IdKey(*id);
    std::string value;
    std::vector<int32_t> tokens;
    std::string text;
    Status s = store_->Get(Cf::kContent, key, &value);
    if (s.ok()) s = internal::DecodeContent(value, &tokens, &text);
    if (s.ok() && (tokens.size() != rv->n_tokens || value.size() != rv->content_bytes)) {
      s = DataLossError("content does not match the record");
    }
    if (!s.ok()) AddProblem(&report, name + "content: " + std::string(s.message()));
    s = store_->Get(Cf::kEmbeddings, key, &value);
    if (s.ok()) s = internal::DecodeEmbedding(value, dim_, emb.data());
    if (!s.ok()) AddProblem(&report, name + "embedding: " + std::string(s.message()));
    if (s.ok()) {
      // FAISS and RocksDB must agree on the vector itself, not only on the id.
      Status r = index_->Reconstruct(static_cast<int64_t>(*id), rec_vec.data());
      if (r.code() == StatusCode::kNotFound) {
        AddProblem(&report, name + "missing from the vector index");
      } else if (r.ok() && std::memcmp(rec_vec.data(), emb.data(), emb.size() * 4) != 0) {
        AddProblem(&report, name + "vector index holds a different embedding");
      }
    }
    if (n_kv_rows_ > 0) {
      s = store_->Get(Cf::kKv, key, &value);
      if (s.ok()) s = internal::VerifyKv(value);
      if (s.ok()) {
        StatusOr<internal::KvHeader> h = internal::DecodeKvHeader(value);
        if (h->dtype != kv_dtype_ || h->n_head_kv != n_kv_rows_ || h->head_dim != head_dim_ ||
            h->n_tokens != static_cast<int64_t>(rv->n_tokens) || value.size() != rv->kv_bytes) {
          s = DataLossError("K/V shape does not match the record or the bank");
        }
      }
      if (!s.ok()) AddProblem(&report, name + "K/V: " + std::string(s.message()));
    } else if (rv->kv_bytes != 0) {
      AddProblem(&report, name + "K/V: the record claims K/V in a bank without K/V");
    }
    if (state_dim_ > 0) {
      s = store_->Get(Cf::kStates, key, &value);
      if (s.ok()) {
        std::vector<float> st(static_cast<size_t>(rv->n_tokens) * static_cast<size_t>(state_dim_));
        std::vector<int32_t> nx(rv->n_tokens);
        s = internal::DecodeStates(value, rv->n_tokens, state_dim_, st.data(), nx.data());
        if (s.ok() && value.size() != rv->states_bytes) {
          s = DataLossError("token states size does not match the record");
        }
      }
      if (!s.ok()) AddProblem(&report, name + "token states: " + std::string(s.message()));
    } else if (rv->states_bytes != 0) {
      AddProblem(&report, name + "token states: the record claims states in a bank without them");
    }
    s = store_->Get(Cf::kDocuments, internal::DocKey(rv->doc_id, *id), &value);
    if (!s.ok()) AddProblem(&report, name + "not listed under its document");
    return Status::Ok();
  }));
  if (seen.size() != metas_.size()) {
    AddProblem(&report, "the bank tracks " + std::to_string(metas_.size()) +
                                     " chunks but RocksDB holds " + std::to_string(seen.size()));
  }
  // Orphans: values or document entries without a record (a partial chunk).
  for (Cf cf : {Cf::kContent, Cf::kKv, Cf::kEmbeddings, Cf::kStates}) {
    RETURN_IF_ERROR(store_->ForEach(cf, "", [&](std::string_view k, std::string_view) {
      StatusOr<uint64_t> id = internal::ParseIdKey(k);
      if (!id.ok() || seen.count(*id) == 0) {
        AddProblem(&report, "orphan value without a chunk record in column family " +
                                         std::to_string(static_cast<int>(cf)));
      }
      return Status::Ok();
    }));
  }
  RETURN_IF_ERROR(store_->ForEach(Cf::kDocuments, "", [&](std::string_view k, std::string_view) {
    if (k.size() != 16 || seen.count(*internal::ParseIdKey(k.substr(8))) == 0) {
      AddProblem(&report, "document entry without a chunk record");
    }
    return Status::Ok();
  }));
  RETURN_IF_ERROR(store_->ForEach(
      Cf::kDefault, internal::kDocumentKeyPrefix, [&](std::string_view k, std::string_view v) {
        StatusOr<DocumentId> id = internal::ParseDocumentKey(k);
        StatusOr<DocumentRecord> r = internal::DecodeDocumentRecord(v);
        if (!id.ok() || !r.ok() || r->id != *id) {
          AddProblem(&report, "document record " + (id.ok() ? std::to_string(*id) : "?") + ": " +
                                  (r.ok() ? "names another id" : std::string(r.status().message())));
        } else if (*id >= next_doc_id_ && *id < kFirstReservedDocumentId) {
          AddProblem(&report, "document id " + std::to_string(*id) +
                                  " is beyond the bank's next document id");
        }
        return Status::Ok();
      }));
  // Index side: every indexed id is live or a tombstone.
  int64_t dead = 0;
  for (int64_t id : index_->Ids()) {
    if (metas_.count(static_cast<ChunkId>(id)) == 0) ++dead;
  }
  if (dead != index_->tombstones()) {
    AddProblem(&report, "the vector index holds " + std::to_string(dead) +
                                     " deleted chunks but tracks " +
                                     std::to_string(index_->tombstones()) + " tombstones");
  }
  if (index_->ntotal() - index_->tombstones() != static_cast<int64_t>(metas_.size())) {
    AddProblem(&report, "the vector index holds " +
                                     std::to_string(index_->ntotal() - index_->tombstones()) +
                                     " live vectors, RocksDB " + std::to_string(metas_.size()));
  }
  for (const auto& [id, m] : metas_) {
    if (id >= next_id_) AddProblem(&report, "chunk id beyond the stored next id");
  }
  return report;
}

BankStats MemoryBank::Stats() const {
  auto lock = ReaderLock();
  BankStats s;
  s.n_chunks = static_cast<int64_t>(metas_.size());
  s.n_documents = static_cast<int64_t>(doc_chunks_.size());
  s.n_tokens = n_tokens_;
  s.stored_bytes = stored_bytes_;
  s.kv_bytes = kv_bytes_;
  s.states_bytes = states_bytes_;
  s.dim = dim_;
  s.kv_layers = kv_layers_;
  s.n_head_kv = n_head_kv_;
  s.head_dim = head_dim_;
  s.state_dim = state_dim_;
  s.kv_dtype = kv_dtype_;
  s.index_factory = index_factory_;
  s.index_ntotal = index_ ? index_->ntotal() : 0;
  s.index_tombstones = index_ ? index_->tombstones() : 0;
  s.mutation_seq = mutation_seq_;
  s.next_id = next_id_;
  s.evicted_chunks = evicted_chunks_;
  s.capacity_tokens = options_.capacity_tokens;
  s.capacity_bytes = options_.capacity_bytes;
  s.eviction = std::string(EvictionPolicyName(options_.eviction));
  s.index_recovery = index_recovery_;
  return s;
}

}  // namespace muninn::memory
