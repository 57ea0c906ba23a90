#include "vector_index.h"

#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include "codec.h"
#include "crc32c.h"
#include "muninn/core/mapped_file.h"

namespace muninn::memory::internal {
namespace {

using idx_t = faiss::Index::idx_t;

template <typename Fn>
Status Guard(std::string_view what, Fn&& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError(std::string(what) + ": out of memory");
  } catch (const std::exception& e) {
    return InternalError(std::string(what) + " (FAISS): " + e.what());
  }
}

// Scans of a Flat index see inner labels 0..ntotal-1; this maps them to chunk ids and asks the
// bank's filter, so the filter is applied inside the exact scan.
struct TranslatingSelector final : faiss::IDSelector {
  const std::vector<idx_t>* id_map = nullptr;
  const std::function<bool(int64_t)>* accept = nullptr;
  const std::unordered_set<int64_t>* tombstones = nullptr;
  bool is_member(idx_t i) const override {
    const int64_t id = (*id_map)[static_cast<size_t>(i)];
    if (!tombstones->empty() && tombstones->count(id) != 0) return false;
    return *accept == nullptr || (*accept)(id);
  }
};

std::unique_ptr<faiss::IndexIDMap2> NewFlatIdMap(int64_t dim) {
  auto map = std::make_unique<faiss::IndexIDMap2>(new faiss::IndexFlatIP(dim));
  map->own_fields = true;
  return map;
}

// FAISS parallelises a search over its queries (Flat below its BLAS threshold, HNSW, IVF), so
// threads beyond the number of queries only wait at barriers, and on a busy machine a barrier
// waiting for a descheduled thread turns a 100 us query into milliseconds. Limits the calling
// thread's OpenMP team to the number of queries for the duration of one search.
class OmpTeamLimit {
 public:
  explicit OmpTeamLimit(int64_t n_queries) : prev_(omp_get_max_threads()) {
#if defined(__SANITIZE_THREAD__)
    // libgomp is not instrumented: ThreadSanitizer cannot see its barriers and would report the
    // team's reads of the bank's bookkeeping as races with later writers. Search single-threaded.
    n_queries = 1;
#endif
    if (n_queries < prev_) omp_set_num_threads(static_cast<int>(std::max<int64_t>(1, n_queries)));
  }
  ~OmpTeamLimit() { omp_set_num_threads(prev_); }
  OmpTeamLimit(const OmpTeamLimit&) = delete;
  OmpTeamLimit& operator=(const OmpTeamLimit&) = delete;

 private:
  int prev_;
};

void SortHits(std::vector<IndexHit>* hits, int64_t k) {
  std::sort(hits->begin(), hits->end(), [](const IndexHit& a, const IndexHit& b) {
    return a.score != b.score ? a.score > b.score : a.id < b.id;
  });
  if (static_cast<int64_t>(hits->size()) > k) hits->resize(static_cast<size_t>(k));
}

// Index file header (little-endian):
//   u32 magic "MNIX" | u32 version | u64 mutation_seq | u64 dim | u64 ntotal | u64 payload_bytes
//   | u32 payload_crc | u32 factory_len | factory bytes | u32 header_crc
// followed by payload_bytes of FAISS's own serialisation (faiss::write_index).
constexpr size_t kFixedHeaderBytes = 52;

void Put32(std::string* s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
}
void Put64(std::string* s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
}
uint64_t Get(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

std::string EncodeIndexHeader(uint64_t seq, int64_t dim, int64_t ntotal, uint64_t payload_bytes,
                              uint32_t payload_crc, const std::string& factory) {
  std::string h;
  Put32(&h, kIndexMagic);
  Put32(&h, kIndexFormatVersion);
  Put64(&h, seq);
  Put64(&h, static_cast<uint64_t>(dim));
  Put64(&h, static_cast<uint64_t>(ntotal));
  Put64(&h, payload_bytes);
  Put32(&h, payload_crc);
  Put32(&h, static_cast<uint32_t>(factory.size()));
  h += factory;
  Put32(&h, Crc32c(0, h.data(), h.size()));
  return h;
}

// Streams FAISS's serialisation into a FILE*, checksumming as it goes.
struct FileWriter final : faiss::IOWriter {
  std::FILE* f = nullptr;
  uint32_t crc = 0;
  uint64_t bytes = 0;
  bool failed = false;
  size_t operator()(const void* ptr, size_t size, size_t nitems) override {
    const size_t n = size * nitems;
    if (n == 0) return nitems;
    if (std::fwrite(ptr, 1, n, f) != n) {
      failed = true;
      return 0;
    }
    crc = Crc32c(crc, ptr, n);
    bytes += n;
    return nitems;
  }
};

// Feeds FAISS from a bounded, already checksummed span; short reads make FAISS throw, which the
// Guard turns into DataLoss-worthy errors.
struct SpanReader final : faiss::IOReader {
  const uint8_t* p = nullptr;
  size_t left = 0;
  size_t operator()(void* ptr, size_t size, size_t nitems) override {
    if (size == 0) return nitems;
    const size_t n = std::min(nitems, left / size);
    if (n == 0) return 0;  // also keeps a null `ptr` (empty FAISS vectors) away from memcpy
    std::memcpy(ptr, p, n * size);
    p += n * size;
    left -= n * size;
    return n;
  }
};

Status FsyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return ErrnoError("open " + path + " for fsync", errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoError("fsync " + path, err);
  return Status::Ok();
}

}  // namespace

struct VectorIndex::Maps {
  std::unique_ptr<faiss::IndexIDMap2> main;
  std::unique_ptr<faiss::IndexIDMap2> staging;  // exact; only while main is untrained
};

VectorIndex::VectorIndex(const VectorIndexOptions& options) : options_(options) {}
VectorIndex::~VectorIndex() = default;

StatusOr<std::unique_ptr<VectorIndex>> VectorIndex::Create(const VectorIndexOptions& options) {
  if (options.dim <= 0) return InvalidArgumentError("index dimension must be positive");
  if (options.factory.rfind("IDMap", 0) == 0) {
    return InvalidArgumentError("index factory '" + options.factory +
                                "' must not start with IDMap: the bank adds its own id map");
  }
  std::unique_ptr<VectorIndex> vi(new VectorIndex(options));
  std::unique_ptr<faiss::IndexIDMap2> main;
  Status st = Guard("create index", [&]() -> Status {
    std::unique_ptr<faiss::Index> idx(faiss::index_factory(
        static_cast<int>(options.dim), ("IDMap2," + options.factory).c_str(),
        faiss::METRIC_INNER_PRODUCT));
    auto* map = dynamic_cast<faiss::IndexIDMap2*>(idx.get());
    if (map == nullptr) return InternalError("index_factory did not return an IndexIDMap2");
    idx.release();
    main.reset(map);
    return Status::Ok();
  });
  if (!st.ok()) {
    return InvalidArgumentError("FAISS rejects index factory '" + options.factory + "' for dim " +
                                std::to_string(options.dim) + ": " + std::string(st.message()));
  }
  auto maps = std::make_unique<Maps>();
  maps->main = std::move(main);
  RETURN_IF_ERROR(vi->Init(std::move(maps)));
  return vi;
}

Status VectorIndex::Init(std::unique_ptr<Maps> maps) {
  maps_ = std::move(maps);
  main_is_flat_ = dynamic_cast<faiss::IndexFlat*>(maps_->main->index) != nullptr;
  if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(maps_->main->index);
      hnsw != nullptr && options_.hnsw_ef_search > 0) {
    hnsw->hnsw.efSearch = static_cast<int>(options_.hnsw_ef_search);
  }
  if (!maps_->main->is_trained) maps_->staging = NewFlatIdMap(options_.dim);
  return Status::Ok();
}

int64_t VectorIndex::ntotal() const {
  return maps_->main->ntotal + (maps_->staging ? maps_->staging->ntotal : 0);
}

std::vector<int64_t> VectorIndex::Ids() const {
  std::vector<int64_t> ids(maps_->main->id_map.begin(), maps_->main->id_map.end());
  if (maps_->staging) ids.insert(ids.end(), maps_->staging->id_map.begin(), maps_->staging->id_map.end());
  return ids;
}

Status VectorIndex::Reconstruct(int64_t id, float* out) const {
  return Guard("index reconstruct", [&]() -> Status {
    if (maps_->staging && maps_->staging->rev_map.count(id) != 0) {
      maps_->staging->reconstruct(id, out);
      return Status::Ok();
    }
    if (maps_->main->rev_map.count(id) == 0) return NotFoundError("id not in the index");
    if (!main_is_flat_) return UnimplementedError("index does not keep exact vectors");
    maps_->main->reconstruct(id, out);
    return Status::Ok();
  });
}

Status VectorIndex::Add(int64_t n, const float* x, const int64_t* ids) {
  if (n == 0) return Status::Ok();
  static_assert(sizeof(idx_t) == sizeof(int64_t));
  OmpTeamLimit team(std::numeric_limits<int64_t>::max());
  RETURN_IF_ERROR(Guard("index add", [&]() -> Status {
    faiss::IndexIDMap2* target = maps_->staging ? maps_->staging.get() : maps_->main.get();
    target->add_with_ids(n, x, reinterpret_cast<const idx_t*>(ids));
    return Status::Ok();
  }));
  return MaybeTrain();
}

Status VectorIndex::MaybeTrain() {
  if (!maps_->staging || maps_->staging->ntotal < std::max<int64_t>(1, options_.train_min_chunks)) {
    return Status::Ok();
  }
  auto* flat = dynamic_cast<faiss::IndexFlat*>(maps_->staging->index);
  MUNINN_CHECK(flat != nullptr);
  const int64_t n = maps_->staging->ntotal;
  try {
    maps_->main->train(n, flat->get_xb());
  } catch (const std::exception&) {
    // Too few points for this factory (e.g. fewer than nlist): keep serving from the exact
    // staging index and try again when more vectors arrive.
    return Status::Ok();
  }
  return Guard("index add after training", [&]() -> Status {
    maps_->main->add_with_ids(n, flat->get_xb(), maps_->staging->id_map.data());
    maps_->staging.reset();
    return Status::Ok();
  });
}

Status VectorIndex::Remove(std::span<const int64_t> ids) {
  if (ids.empty()) return Status::Ok();
  OmpTeamLimit team(std::numeric_limits<int64_t>::max());
  return Guard("index remove", [&]() -> Status {
    std::vector<idx_t> in_main, in_staging;
    for (int64_t id : ids) {
      if (maps_->main->rev_map.count(id) != 0) {
        in_main.push_back(id);
      } else if (maps_->staging && maps_->staging->rev_map.count(id) != 0) {
        in_staging.push_back(id);
      }
    }
    if (!in_staging.empty()) {
      maps_->staging->remove_ids(faiss::IDSelectorBatch(in_staging.size(), in_staging.data()));
    }
    if (!in_main.empty()) {
      bool removed = false;
      try {
        maps_->main->remove_ids(faiss::IDSelectorBatch(in_main.size(), in_main.data()));
        removed = true;
      } catch (const faiss::FaissException&) {
        // This index type cannot remove (HNSW): tombstone and let the bank rebuild later.
      }
      if (!removed) tombstones_.insert(in_main.begin(), in_main.end());
    }
    return Status::Ok();
  });
}

namespace {

Status SearchOne(const faiss::IndexIDMap2& index, bool flat, const VectorIndexOptions& options_,
                 const std::unordered_set<int64_t>& tombstones_, const float* queries,
                 int64_t n_queries, int64_t k, const std::function<bool(int64_t)>& accept,
                 std::vector<std::vector<IndexHit>>* results) {
  const int64_t ntotal = index.ntotal;
  if (ntotal == 0) return Status::Ok();
  const bool filtering = accept != nullptr || !tombstones_.empty();
  const auto dim = static_cast<size_t>(options_.dim);
  if (flat) {
    // Exact: the filter runs inside the scan of the inner Flat index.
    const int64_t kk = std::min(k, ntotal);
    std::vector<float> dist(static_cast<size_t>(n_queries * kk));
    std::vector<idx_t> labels(dist.size());
    TranslatingSelector sel;
    sel.id_map = &index.id_map;
    sel.accept = &accept;
    sel.tombstones = &tombstones_;
    faiss::SearchParameters params;
    params.sel = &sel;
    index.index->search(n_queries, queries, kk, dist.data(), labels.data(),
                        filtering ? &params : nullptr);
    for (int64_t q = 0; q < n_queries; ++q) {
      for (int64_t j = 0; j < kk; ++j) {
        const size_t at = static_cast<size_t>(q * kk + j);
        if (labels[at] < 0) continue;
        (*results)[static_cast<size_t>(q)].push_back(
            {index.id_map[static_cast<size_t>(labels[at])], dist[at]});
      }
    }
    return Status::Ok();
  }
  // Approximate: over-fetch, filter, and fetch more for queries that came up short.
  int64_t fetch = k;
  if (filtering) {
    fetch = std::max(k * std::max<int64_t>(1, options_.overfetch_factor),
                     k + static_cast<int64_t>(tombstones_.size()));
  }
  std::vector<int64_t> pending(static_cast<size_t>(n_queries));
  for (int64_t q = 0; q < n_queries; ++q) pending[static_cast<size_t>(q)] = q;
  std::vector<float> qbuf;
  while (!pending.empty()) {
    fetch = std::min(fetch, ntotal);
    const auto np = static_cast<int64_t>(pending.size());
    qbuf.resize(static_cast<size_t>(np) * dim);
    for (int64_t i = 0; i < np; ++i) {
      std::memcpy(qbuf.data() + static_cast<size_t>(i) * dim,
                  queries + static_cast<size_t>(pending[static_cast<size_t>(i)]) * dim,
                  dim * sizeof(float));
    }
    std::vector<float> dist(static_cast<size_t>(np * fetch));
    std::vector<idx_t> labels(dist.size());
    index.search(np, qbuf.data(), fetch, dist.data(), labels.data());
    std::vector<int64_t> still;
    for (int64_t i = 0; i < np; ++i) {
      std::vector<IndexHit> hits;
      for (int64_t j = 0; j < fetch; ++j) {
        const size_t at = static_cast<size_t>(i * fetch + j);
        const int64_t id = labels[at];
        if (id < 0) continue;
        if (!tombstones_.empty() && tombstones_.count(id) != 0) continue;
        if (accept != nullptr && !accept(id)) continue;
        hits.push_back({id, dist[at]});
      }
      const int64_t q = pending[static_cast<size_t>(i)];
      if (static_cast<int64_t>(hits.size()) >= k || fetch >= ntotal) {
        auto& out = (*results)[static_cast<size_t>(q)];
        out.insert(out.end(), hits.begin(), hits.end());
      } else {
        still.push_back(q);
      }
    }
    pending.swap(still);
    fetch *= 2;
  }
  return Status::Ok();
}

}  // namespace

Status VectorIndex::Search(const float* queries, int64_t n_queries, int64_t k,
                           const std::function<bool(int64_t)>& accept,
                           std::vector<std::vector<IndexHit>>* results) const {
  results->assign(static_cast<size_t>(n_queries), {});
  if (k <= 0 || n_queries <= 0) return Status::Ok();
  return Guard("index search", [&]() -> Status {
    OmpTeamLimit team(n_queries);
    RETURN_IF_ERROR(SearchOne(*maps_->main, main_is_flat_, options_, tombstones_, queries,
                              n_queries, k, accept, results));
    if (maps_->staging) {
      RETURN_IF_ERROR(SearchOne(*maps_->staging, true, options_, tombstones_, queries, n_queries, k,
                                accept, results));
    }
    for (auto& r : *results) SortHits(&r, k);
    return Status::Ok();
  });
}

Status VectorIndex::Save(const std::string& path, uint64_t mutation_seq) const {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return ErrnoError("create " + tmp, errno);
  FileWriter w;
  w.f = f;
  // Placeholder header of the final size; rewritten once the payload length and CRC are known.
  const std::string placeholder = EncodeIndexHeader(0, 0, 0, 0, 0, options_.factory);
  Status st;
  if (std::fwrite(placeholder.data(), 1, placeholder.size(), f) != placeholder.size()) {
    st = ErrnoError("write " + tmp, errno);
  }
  if (st.ok()) {
    st = Guard("index write", [&]() -> Status {
      faiss::write_index(maps_->main.get(), &w);
      return Status::Ok();
    });
  }
  if (st.ok() && w.failed) st = IoError("write " + tmp + " failed (disk full?)");
  if (st.ok()) {
    const std::string header = EncodeIndexHeader(mutation_seq, options_.dim, maps_->main->ntotal, w.bytes,
                                                  w.crc, options_.factory);
    if (std::fseek(f, 0, SEEK_SET) != 0 ||
        std::fwrite(header.data(), 1, header.size(), f) != header.size() || std::fflush(f) != 0 ||
        ::fsync(fileno(f)) != 0) {
      st = ErrnoError("write " + tmp, errno);
    }
  }
  if (std::fclose(f) != 0 && st.ok()) st = ErrnoError("close " + tmp, errno);
  if (st.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) st = ErrnoError("rename " + tmp, errno);
  if (!st.ok()) {
    std::remove(tmp.c_str());
    return st;
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return FsyncPath(dir.empty() ? "." : dir, /*directory=*/true);
}

StatusOr<std::unique_ptr<VectorIndex>> VectorIndex::Load(const std::string& path,
                                                         const VectorIndexOptions& options,
                                                         uint64_t* mutation_seq) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  const uint8_t* p = file->data();
  const size_t size = file->size();
  if (size < kFixedHeaderBytes) return DataLossError("index file " + path + " is truncated");
  if (Get(p, 4) != kIndexMagic) return DataLossError("index file " + path + " has a bad magic");
  if (Get(p + 4, 4) != kIndexFormatVersion) {
    return FailedPreconditionError("index file " + path + " has another format version");
  }
  const uint64_t flen = Get(p + 44, 4);
  if (flen > size - kFixedHeaderBytes) return DataLossError("index file " + path + " is truncated");
  const size_t header_bytes = kFixedHeaderBytes + static_cast<size_t>(flen);
  if (Crc32c(0, p, header_bytes - 4) != Get(p + header_bytes - 4, 4)) {
    return DataLossError("index file " + path + " header fails its checksum");
  }
  const uint64_t seq = Get(p + 8, 8);
  const uint64_t dim = Get(p + 16, 8);
  const uint64_t payload_bytes = Get(p + 32, 8);
  const auto payload_crc = static_cast<uint32_t>(Get(p + 40, 4));
  const std::string factory(reinterpret_cast<const char*>(p + 48), static_cast<size_t>(flen));
  if (dim != static_cast<uint64_t>(options.dim) || factory != options.factory) {
    return FailedPreconditionError("index file " + path + " was built for dim " +
                                   std::to_string(dim) + " '" + factory + "'");
  }
  if (payload_bytes != size - header_bytes) {
    return DataLossError("index file " + path + " payload length does not match the file");
  }
  const uint8_t* payload = p + header_bytes;
  if (Crc32c(0, payload, payload_bytes) != payload_crc) {
    return DataLossError("index file " + path + " payload fails its checksum");
  }
  std::unique_ptr<faiss::IndexIDMap2> main;
  Status st = Guard("index read", [&]() -> Status {
    SpanReader r;
    r.p = payload;
    r.left = static_cast<size_t>(payload_bytes);
    std::unique_ptr<faiss::Index> idx(faiss::read_index(&r));
    auto* map = dynamic_cast<faiss::IndexIDMap2*>(idx.get());
    if (map == nullptr || map->d != static_cast<int>(options.dim)) {
      return DataLossError("index file " + path + " does not hold an id-mapped index of dim " +
                           std::to_string(options.dim));
    }
    idx.release();
    main.reset(map);
    return Status::Ok();
  });
  if (!st.ok()) {
    return st.code() == StatusCode::kDataLoss ? st : DataLossError(std::string(st.message()));
  }
  std::unique_ptr<VectorIndex> vi(new VectorIndex(options));
  auto maps = std::make_unique<Maps>();
  maps->main = std::move(main);
  RETURN_IF_ERROR(vi->Init(std::move(maps)));
  *mutation_seq = seq;
  return vi;
}

}  // namespace muninn::memory::internal
