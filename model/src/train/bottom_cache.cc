#include "train/bottom_cache.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "train/atomic_file.h"
#include "train/fnv1a.h"

namespace muninn::model::train {

namespace {

constexpr char kMagic[8] = {'M', 'N', 'B', 'O', 'T', 'C', '2', '\0'};

struct Header {
  char magic[8];
  uint64_t fingerprint;
  int64_t start_pos, n_tokens, n_embd;
  uint64_t values_hash;
};

uint64_t HashOf(std::span<const float> h) {
  return Fnv1a({reinterpret_cast<const uint8_t*>(h.data()), h.size_bytes()});
}

// Hashes a weight's dtype, shape and bytes (a device model's weights are read back once for it).
StatusOr<uint64_t> HashTensor(Backend& backend, const Tensor& t, uint64_t h) {
  if (!t.defined()) return h;
  h = Fnv1aOf(static_cast<int>(t.dtype()), h);
  for (int i = 0; i < t.ndim(); ++i) h = Fnv1aOf(t.dim(i), h);
  ASSIGN_OR_RETURN(const Tensor host, OnHost(backend, t));
  return Fnv1a({static_cast<const uint8_t*>(host.data()), host.nbytes()}, h);
}

}  // namespace

StatusOr<BottomCache> BottomCache::Open(const std::string& dir, const Model& model,
                                        int32_t first_layer) {
  if (dir.empty()) return InvalidArgumentError("the bottom cache needs a folder");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir)) {
    return IoError("cannot create the bottom cache folder " + dir +
                   (ec ? ": " + ec.message() : std::string()));
  }
  const ModelConfig& mc = model.config();
  uint64_t h = Fnv1a({reinterpret_cast<const uint8_t*>(kMagic), sizeof kMagic});
  // The backend's name carries its kernel family and exact_matmul ("cpu-avx512-exact"): entries
  // made by other kernels would be a correct forward, but not this one's bits.
  const std::string backend = model.backend()->name();
  h = Fnv1a({reinterpret_cast<const uint8_t*>(backend.data()), backend.size()}, h);
  for (int64_t v : {int64_t{first_layer}, int64_t{mc.n_layer}, int64_t{mc.n_embd},
                    int64_t{mc.n_head}, int64_t{mc.n_head_kv}, int64_t{mc.head_dim},
                    int64_t{mc.n_ff}}) {
    h = Fnv1aOf(v, h);
  }
  const RopeParams& r = mc.rope;
  for (float v : {mc.norm_eps, mc.embd_scale, r.freq_base, r.factor, r.beta_fast, r.beta_slow,
                  r.attn_factor}) {
    h = Fnv1aOf(v, h);
  }
  for (int v : {static_cast<int>(r.layout), r.n_rot, static_cast<int>(r.scaling), r.original_ctx}) {
    h = Fnv1aOf(v, h);
  }
  const ModelWeights& w = model.weights();
  Backend& be = *model.backend();
  ASSIGN_OR_RETURN(h, HashTensor(be, w.tok_embd, h));
  for (int32_t l = 0; l < first_layer; ++l) {
    const LayerWeights& lw = w.layers[static_cast<size_t>(l)];
    for (const Tensor* t : {&lw.attn_norm, &lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.ffn_norm,
                            &lw.w_gate, &lw.w_up, &lw.w_down}) {
      ASSIGN_OR_RETURN(h, HashTensor(be, *t, h));
    }
  }
  BottomCache c;
  c.dir_ = dir;
  c.n_embd_ = mc.n_embd;
  c.fingerprint_ = h;
  return c;
}

std::string BottomCache::PathOf(int64_t start_pos, std::span<const TokenId> ids) const {
  const uint64_t key = Fnv1a({reinterpret_cast<const uint8_t*>(ids.data()), ids.size_bytes()},
                             Fnv1aOf(start_pos, fingerprint_));
  char name[24];
  std::snprintf(name, sizeof name, "%016llx.bin", static_cast<unsigned long long>(key));
  return dir_ + "/" + name;
}

bool BottomCache::Read(int64_t start_pos, std::span<const TokenId> ids, std::vector<float>* h) {
  std::ifstream in(PathOf(start_pos, ids), std::ios::binary);
  if (!in) {
    ++stats_.misses;
    return false;
  }
  const auto T = static_cast<int64_t>(ids.size());
  Header hd{};
  std::vector<TokenId> stored(ids.size());
  h->resize(static_cast<size_t>(T * n_embd_));
  const bool ok =
      in.read(reinterpret_cast<char*>(&hd), sizeof hd) &&
      std::memcmp(hd.magic, kMagic, sizeof kMagic) == 0 && hd.fingerprint == fingerprint_ &&
      hd.start_pos == start_pos && hd.n_tokens == T && hd.n_embd == n_embd_ &&
      in.read(reinterpret_cast<char*>(stored.data()),
              static_cast<std::streamsize>(stored.size() * sizeof(TokenId))) &&
      std::equal(stored.begin(), stored.end(), ids.begin()) &&
      in.read(reinterpret_cast<char*>(h->data()), static_cast<std::streamsize>(h->size() * 4)) &&
      in.peek() == std::char_traits<char>::eof() && HashOf(*h) == hd.values_hash;
  if (!ok) {
    ++stats_.rejected;
    return false;
  }
  ++stats_.hits;
  return true;
}

Status BottomCache::Write(int64_t start_pos, std::span<const TokenId> ids,
                          std::span<const float> h) {
  if (static_cast<int64_t>(h.size()) != static_cast<int64_t>(ids.size()) * n_embd_) {
    return InvalidArgumentError("bottom cache: the values do not match the block's shape");
  }
  Header hd{};
  std::memcpy(hd.magic, kMagic, sizeof kMagic);
  hd.fingerprint = fingerprint_;
  hd.start_pos = start_pos;
  hd.n_tokens = static_cast<int64_t>(ids.size());
  hd.n_embd = n_embd_;
  hd.values_hash = HashOf(h);
  const std::span<const uint8_t> pieces[] = {
      {reinterpret_cast<const uint8_t*>(&hd), sizeof hd},
      {reinterpret_cast<const uint8_t*>(ids.data()), ids.size_bytes()},
      {reinterpret_cast<const uint8_t*>(h.data()), h.size_bytes()}};
  Status st = WriteFileAtomic(PathOf(start_pos, ids), pieces, AtomicWriteOptions{.durable = false});
  if (!st.ok()) {
    st = st.WithContext("bottom cache");
    if (stats_.write_errors++ == 0) stats_.first_write_error = st.ToString();
  }
  return st;
}

}  // namespace muninn::model::train
