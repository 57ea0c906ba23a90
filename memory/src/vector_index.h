// VectorIndex: the one adapter between the memory bank and FAISS. It wraps the index built from
// the bank's factory string in an IndexIDMap2 (so FAISS ids are chunk ids), converts every FAISS
// exception into a Status, and adds what FAISS 1.7.3 lacks for the bank:
//  - filtered search: Flat indexes filter inside the scan (an IDSelector that maps inner labels
//    to chunk ids), so the result is exact; other indexes over-fetch and filter afterwards,
//    doubling the fetch until k matches are found or the whole index was returned;
//  - deletion from indexes that cannot remove (HNSW): the id becomes a tombstone, skipped by
//    search, until the bank rebuilds the index;
//  - indexes that need training (IVF, PQ): vectors wait in an exact staging index until enough
//    exist to train on, and both are searched meanwhile;
//  - persistence: a file of ours (header with magic, version, mutation sequence, CRC) holding
//    FAISS's serialisation, written to a temp file, fsynced and renamed.
//
// Thread safety: Search, Ids, Save and the accessors are const and may run concurrently; Add,
// Remove need exclusive access (MemoryBank's writer lock).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "muninn/core/status.h"

namespace muninn::memory::internal {

struct VectorIndexOptions {
  int64_t dim = 0;
  std::string factory = "Flat";
  int64_t hnsw_ef_search = 64;
  int64_t train_min_chunks = 10000;
  int64_t overfetch_factor = 4;
};

struct IndexHit {
  int64_t id;
  float score;
};

class VectorIndex {
 public:
  // An empty index. InvalidArgument when FAISS rejects the factory string.
  static StatusOr<std::unique_ptr<VectorIndex>> Create(const VectorIndexOptions& options);
  // Reads a file written by Save. DataLoss when it is corrupt, FailedPrecondition when it was
  // written for another dimension or factory string (the caller rebuilds), NotFound when absent.
  static StatusOr<std::unique_ptr<VectorIndex>> Load(const std::string& path,
                                                     const VectorIndexOptions& options,
                                                     uint64_t* mutation_seq);
  ~VectorIndex();
  VectorIndex(const VectorIndex&) = delete;
  VectorIndex& operator=(const VectorIndex&) = delete;

  // Adds n vectors ([n, dim]) with their ids (ids must not be present).
  Status Add(int64_t n, const float* x, const int64_t* ids);
  // Removes ids (or tombstones them when the index cannot remove).
  Status Remove(std::span<const int64_t> ids);
  // Top-k per query among ids for which `accept` is true (all when null), descending score, ties
  // by ascending id. results must have n_queries entries.
  Status Search(const float* queries, int64_t n_queries, int64_t k,
                const std::function<bool(int64_t)>& accept,
                std::vector<std::vector<IndexHit>>* results) const;
  // Writes the index to `path` atomically, labelled with `mutation_seq`.
  Status Save(const std::string& path, uint64_t mutation_seq) const;

  // The stored vector of `id` when the index keeps vectors exactly (Flat, or staged);
  // Unimplemented for lossy indexes, NotFound for an absent id.
  Status Reconstruct(int64_t id, float* out) const;
  // Every id held (tombstones included), unordered.
  std::vector<int64_t> Ids() const;
  int64_t ntotal() const;
  int64_t tombstones() const { return static_cast<int64_t>(tombstones_.size()); }
  bool is_exact() const { return main_is_flat_; }

 private:
  explicit VectorIndex(const VectorIndexOptions& options);
  struct Maps;  // the FAISS objects (vector_index.cc)
  Status Init(std::unique_ptr<Maps> maps);
  Status MaybeTrain();

  VectorIndexOptions options_;
  std::unique_ptr<Maps> maps_;
  bool main_is_flat_ = false;
  std::unordered_set<int64_t> tombstones_;
};

}  // namespace muninn::memory::internal
