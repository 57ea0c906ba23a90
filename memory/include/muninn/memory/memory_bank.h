// MemoryBank: the durable store of every past chunk: the K/V of the layers the memory modes read
// (none for a text-only bank), per-token states (kNN-LM), retrieval embedding, tokens and text,
// with top-k inner-product search over the embeddings.
//
// Storage. RocksDB is the source of truth (column families records / content / kv / embeddings /
// documents / states, written through its WAL). The FAISS index is derived state: it is written to
// `<path>/index.mnx` together with the bank mutation sequence it reflects, and on open it is
// loaded and caught up from the stored embeddings (or rebuilt when missing, corrupt or for
// another shape), so search always agrees with RocksDB. docs/MEMORY_BANK.md has the byte layout.
//
// Atomicity. An Append (and the evictions it triggers) is one RocksDB WriteBatch: after a crash
// either all of its chunks exist or none. DeleteDocument is one batch too.
//
// Documents. The bank hands out document ids (BeginDocument) and keeps each document's name,
// size and state (partial until PutDocument marks it complete), so an ingest that dies leaves a
// visible partial document whose id is never reused.
//
// Thread safety. Thread-safe: any number of readers (Search, FetchKV, GetChunk, Info, Stats,
// Verify, ListChunks, GetDocument, ListDocuments, NextDocumentId) run concurrently; writers
// (Append, DeleteDocument, BeginDocument, PutDocument, Flush, Compact) take the bank
// exclusively, one at a time. Append encodes and quantizes its chunks before taking the
// lock, so readers are blocked only for the RocksDB write and the index insert. Search bumps
// retrieval counters with relaxed atomics under the shared lock; counters reach disk on Flush,
// Compact, eviction and Close (a crash may lose counts since the last of those, never chunks).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/core/tensor.h"
#include "muninn/memory/chunk_record.h"
#include "muninn/memory/document_record.h"
#include "muninn/memory/memory_bank_options.h"

namespace muninn::memory {

namespace internal {
class ChunkStore;
class LexicalIndex;
class VectorIndex;
}  // namespace internal

// Restricts a search. Empty/unset fields do not filter.
struct SearchFilter {
  // Only chunks of these documents.
  std::vector<DocumentId> doc_ids;
  // Only chunks whose position (token offset) is < before_position, so that a window at token p
  // retrieves neither itself nor the future. -1 = no limit.
  int64_t before_position = -1;
  // Only chunks with id < before_id (chunks appended before a given one). 0 = no limit.
  ChunkId before_id = 0;
};

struct SearchHit {
  ChunkId id = 0;
  float score = 0.0f;  // inner product with the query
  DocumentId doc_id = 0;
  int64_t position = 0;
  int64_t n_tokens = 0;
};

// K/V of several chunks, concatenated along the token axis in chronological (id) order.
struct FetchedKV {
  std::vector<ChunkId> ids;       // [n_chunks], ascending
  std::vector<int64_t> lengths;   // [n_chunks] tokens per chunk
  Tensor k;                       // [n_kv_layers · n_head_kv, M, head_dim], M = sum(lengths)
  Tensor v;                       // [n_kv_layers · n_head_kv, M, head_dim]
};

// Per-token states of several chunks (kNN-LM datastore), chronological.
struct FetchedStates {
  std::vector<ChunkId> ids;           // [n_chunks], ascending
  std::vector<int64_t> lengths;       // [n_chunks]
  std::vector<int64_t> positions;     // [n_chunks] token offset of each chunk in its document
  std::vector<float> states;          // [N, state_dim], N = sum(lengths)
  std::vector<int32_t> next_tokens;   // [N] (-1: unknown)
};

struct BankStats {
  int64_t n_chunks = 0;
  int64_t n_documents = 0;
  int64_t n_tokens = 0;
  int64_t stored_bytes = 0;
  int64_t kv_bytes = 0;
  int64_t dim = 0;
  std::vector<int32_t> kv_layers;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;
  int64_t state_dim = 0;
  int64_t states_bytes = 0;
  DType kv_dtype = DType::kBF16;
  std::string index_factory;
  int64_t index_ntotal = 0;      // vectors in the FAISS index(es), tombstones included
  int64_t index_tombstones = 0;  // deleted chunks still in an index that cannot remove
  uint64_t mutation_seq = 0;
  ChunkId next_id = 0;
  int64_t evicted_chunks = 0;    // since creation
  int64_t capacity_tokens = 0;
  int64_t capacity_bytes = 0;
  std::string eviction;
  // What opening did with the persisted index: "loaded", "caught up (+a -r)", "rebuilt (why)",
  // "created" or "in memory".
  std::string index_recovery;
};

struct VerifyReport {
  int64_t records_checked = 0;
  int64_t problems = 0;
  std::vector<std::string> messages;  // one per problem (capped)
  bool ok() const { return problems == 0; }
};

class MemoryBank {
 public:
  // Opens (or creates, per options) the bank. Errors: InvalidArgument for bad options or a shape
  // mismatch with the stored bank, DataLoss for a corrupt record or header, IoError from disk.
  static StatusOr<std::unique_ptr<MemoryBank>> Open(const MemoryBankOptions& options);
  // Salvages a damaged bank directory (RocksDB repair: a fresh MANIFEST/CURRENT from the tables
  // and logs that still read). Rows in corrupt tables may be lost, so back the directory up
  // first; open the bank and run Verify afterwards. The bank must not be open.
  static Status Repair(const std::string& path);

  // Flushes counters and the index; errors are logged (call Close() to see them).
  ~MemoryBank();
  MemoryBank(const MemoryBank&) = delete;
  MemoryBank& operator=(const MemoryBank&) = delete;

  // Persists counters and the index, then closes RocksDB. Further calls fail with
  // FailedPrecondition. Idempotent.
  Status Close();

  // Appends `chunks` atomically and returns their ids (ascending, in input order). Evicts first
  // when capacity would be exceeded (in the same batch). InvalidArgument for a chunk whose shape
  // does not fit the bank; ResourceExhausted when the chunks cannot fit even after eviction.
  StatusOr<std::vector<ChunkId>> Append(std::span<const ChunkInput> chunks);

  // Top-k by inner product for each of n_queries embeddings ([n_queries, dim] row-major).
  // results[q] is sorted by descending score, ties by ascending id, and has min(k, matches)
  // hits. Exact for Flat; approximate (over-fetched and filtered) for other indexes.
  // `count_retrievals` increments the retrieval counter of each returned chunk once.
  StatusOr<std::vector<std::vector<SearchHit>>> Search(std::span<const float> queries,
                                                       int64_t n_queries, int64_t k,
                                                       const SearchFilter& filter = {},
                                                       bool count_retrievals = true);

  // Top-k chunks by Okapi BM25 over their text (words, not meaning: a rare name or term ranks
  // the chunk holding it first), under the same filter as Search; hits sorted by descending
  // score (the BM25 value), ties by ascending id. Chunks sharing no word with the query are not
  // returned. The word index is derived data kept in RAM (about as large as a Flat vector index):
  // built from the stored texts by the first call, then kept in step with appends and deletes.
  StatusOr<std::vector<SearchHit>> SearchText(std::string_view query, int64_t k,
                                              const SearchFilter& filter = {},
                                              bool count_retrievals = true);

  // K/V of `ids` (any order, duplicates ignored) in chronological order, converted to
  // out_dtype (kF32, or the bank's kv_dtype for a raw copy). NotFound for an unknown id;
  // FailedPrecondition for a bank that stores no K/V.
  StatusOr<FetchedKV> FetchKV(std::span<const ChunkId> ids, DType out_dtype = DType::kF32) const;
  // Per-token states of `ids` (any order, duplicates ignored), chronological. FailedPrecondition
  // for a bank without states.
  StatusOr<FetchedStates> FetchStates(std::span<const ChunkId> ids) const;

  // Everything stored for one chunk. NotFound for an unknown id; DataLoss if it does not decode.
  StatusOr<ChunkRecord> GetChunk(ChunkId id) const;

  // Bookkeeping of one live chunk, or NotFound.
  StatusOr<ChunkInfo> Info(ChunkId id) const;
  // All live chunks, ascending id.
  std::vector<ChunkInfo> ListChunks() const;

  // Removes every chunk of `doc_id` and its document record (one batch); returns how many chunks
  // were removed.
  StatusOr<int64_t> DeleteDocument(DocumentId doc_id);

  // ---- document catalog (docs/MEMORY_BANK.md, "Document records") ----
  // Assigns a new document id (never handed out before, above every id the bank holds) and
  // durably records the document as kPartial under `name`, before any chunk is appended. Call
  // PutDocument with kComplete once its chunks are in. InvalidArgument for a name over 4 KiB.
  StatusOr<DocumentId> BeginDocument(std::string_view name);
  // Creates or replaces the record of `record.id` (ids below kFirstReservedDocumentId, or
  // reserved ids the caller owns). Later BeginDocument ids stay above it.
  Status PutDocument(const DocumentRecord& record);
  // NotFound when the bank has neither a record nor chunks for `id`.
  StatusOr<DocumentRecord> GetDocument(DocumentId id) const;
  // Every document with a record, plus every non-reserved document id that has chunks but no
  // record (has_record = false, state kPartial), ascending id, with live chunk counts.
  std::vector<DocumentRecord> ListDocuments() const;
  // The id BeginDocument would hand out next.
  DocumentId NextDocumentId() const;

  // Writes retrieval counters and the index; with kNoSync also syncs the WAL.
  Status Flush();
  // Flush + index rebuild when tombstones exist + RocksDB compaction.
  Status Compact();

  // Reads every record back and checks that RocksDB and the index agree. The Status is an error
  // only when verification itself could not run; problems are listed in the report.
  StatusOr<VerifyReport> Verify() const;

  BankStats Stats() const;

  int64_t dim() const { return dim_; }
  int64_t n_head_kv() const { return n_head_kv_; }
  int64_t head_dim() const { return head_dim_; }
  // Layers whose K/V each chunk holds (empty: none recorded; see MemoryBankOptions::kv_layers).
  const std::vector<int32_t>& kv_layers() const { return kv_layers_; }
  // K/V layers per chunk (0 for a text-only bank).
  int64_t n_kv_layers() const { return n_kv_rows_ == 0 ? 0 : n_kv_rows_ / n_head_kv_; }
  bool has_kv() const { return n_kv_rows_ > 0; }
  int64_t state_dim() const { return state_dim_; }
  DType kv_dtype() const { return kv_dtype_; }

 private:
  struct Meta {
    DocumentId doc_id = 0;
    int64_t position = 0;
    int64_t n_tokens = 0;
    int64_t stored_bytes = 0;
    int64_t kv_bytes = 0;
    int64_t states_bytes = 0;
    uint32_t persisted_count = 0;  // value on disk; written only by writers
    mutable std::atomic<uint32_t> retrieval_count{0};
  };

  explicit MemoryBank(const MemoryBankOptions& options);
  Status OpenImpl();
  Status LoadOrRebuildIndex();
  Status PersistIndexLocked();
  Status RebuildIndexLocked();
  Status FlushLocked();
  Status LoadDocumentsLocked();
  DocumentRecord DocumentOfLocked(DocumentId id) const;
  ChunkInfo InfoOf(ChunkId id, const Meta& m) const;
  // The chunk filter of Search/SearchText (empty when `filter` restricts nothing). `doc_set` holds
  // the documents of a many-document filter and must outlive the function.
  std::function<bool(int64_t)> AcceptLocked(const SearchFilter& filter,
                                            std::unordered_set<DocumentId>* doc_set) const;
  // Builds the word index from the stored texts when it does not exist yet (lexical_mu_ held).
  Status EnsureLexicalLocked() const;
  // Keeps a built word index in step with a write (writer lock held).
  void UpdateLexicalLocked(std::span<const ChunkId> removed, std::span<const ChunkId> added,
                           std::span<const ChunkInput> added_chunks);
  // Plans evictions so that `add_tokens`/`add_bytes` fit; ids to delete, ascending.
  StatusOr<std::vector<ChunkId>> PlanEvictionLocked(int64_t add_tokens, int64_t add_bytes) const;

  MemoryBankOptions options_;
  int64_t dim_ = 0;
  int64_t n_head_kv_ = 0;
  int64_t head_dim_ = 0;
  std::vector<int32_t> kv_layers_;
  int64_t n_kv_rows_ = 0;  // K/V head rows per token: n_kv_layers · n_head_kv (0: no K/V)
  int64_t state_dim_ = 0;
  DType kv_dtype_ = DType::kBF16;
  std::string index_factory_;

  // Readers hold mu_ shared, writers exclusive. Both pass gate_ first (readers only for an
  // instant), so a waiting writer stops new readers from entering: std::shared_mutex alone lets
  // a steady stream of readers starve the writer.
  mutable std::mutex gate_;
  mutable std::shared_mutex mu_;
  std::shared_lock<std::shared_mutex> ReaderLock() const;
  std::unique_lock<std::shared_mutex> WriterLock() const;
  std::unique_ptr<internal::ChunkStore> store_;
  std::unique_ptr<internal::VectorIndex> index_;
  // The BM25 word index: built lazily by SearchText (under a reader lock, so behind its own
  // mutex), updated by writers. Null until first used.
  mutable std::mutex lexical_mu_;
  mutable std::unique_ptr<internal::LexicalIndex> lexical_;
  std::unordered_map<ChunkId, Meta> metas_;
  std::unordered_map<DocumentId, int64_t> doc_chunks_;  // live chunks per document
  std::unordered_map<DocumentId, DocumentRecord> doc_records_;  // the catalog, mirrored
  DocumentId next_doc_id_ = 1;  // persisted under "docs"; see BeginDocument
  ChunkId next_id_ = 1;
  uint64_t mutation_seq_ = 0;
  uint64_t index_persisted_seq_ = 0;
  int64_t evicted_chunks_ = 0;
  std::string index_recovery_;
  int64_t n_tokens_ = 0;
  int64_t stored_bytes_ = 0;
  int64_t kv_bytes_ = 0;
  int64_t states_bytes_ = 0;
  bool closed_ = false;
};

}  // namespace muninn::memory
