#include "train/bottom_cache.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace muninn::model::train {

namespace {

constexpr char kMagic[8] = {'M', 'N', 'B', 'O', 'T', 'C', '1', '\0'};

// Two independent 64-bit streams over the same bytes (128 bits of key): a multiply-xorshift mix
// per 8-byte word and a splitmix64 finalizer. Not cryptographic; the inputs are not adversarial.
class Hasher {
 public:
  void Add(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      Mix(w);
    }
    uint64_t tail = 0;
    std::memcpy(&tail, p + i, n - i);
    Mix(tail ^ (static_cast<uint64_t>(n - i) << 56));
  }
  template <class T>
  void AddValue(const T& v) {
    Add(&v, sizeof v);
  }
  uint64_t lo() const { return Final(a_); }
  uint64_t hi() const { return Final(b_); }

 private:
  void Mix(uint64_t w) {
    a_ = (a_ ^ w) * 0x9E3779B97F4A7C15ull;
    a_ ^= a_ >> 29;
    b_ = (b_ + w) * 0xBF58476D1CE4E5B9ull;
    b_ ^= b_ >> 31;
  }
  static uint64_t Final(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
  }
  uint64_t a_ = 0x243F6A8885A308D3ull, b_ = 0x13198A2E03707344ull;
};

struct Header {
  char magic[8];
  uint64_t key_lo, key_hi;
  int64_t n_tokens, n_embd;
  uint64_t payload_hash;
};

uint64_t PayloadHash(std::span<const float> h) {
  Hasher x;
  x.Add(h.data(), h.size_bytes());
  return x.lo();
}

void AddTensor(Hasher* x, const Tensor& t) {
  if (!t.defined()) return;
  x->AddValue(static_cast<int>(t.dtype()));
  for (int i = 0; i < t.ndim(); ++i) x->AddValue(t.dim(i));
  // Weights are host tensors loaded whole (packed); hash what they hold.
  x->Add(t.data(), static_cast<size_t>(t.nbytes()));
}

}  // namespace

StatusOr<BottomCache> BottomCache::Open(const std::string& dir, const Model& model,
                                        int32_t first_layer) {
  if (dir.empty()) return InvalidArgumentError("the bottom cache needs a folder");
  if (!model.backend()->device().is_cpu()) {
    return UnimplementedError("the bottom cache fingerprints host weights (CPU models only)");
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir)) {
    return IoError("cannot create the bottom cache folder " + dir +
                   (ec ? ": " + ec.message() : std::string()));
  }
  const ModelConfig& mc = model.config();
  Hasher x;
  x.Add(kMagic, sizeof kMagic);
  // The backend's name carries its kernel family and exact_matmul ("cpu-avx512-exact"): entries
  // made by other kernels would be a correct forward, but not this one's bits.
  const std::string backend = model.backend()->name();
  x.Add(backend.data(), backend.size());
  for (int64_t v : {int64_t{first_layer}, int64_t{mc.n_layer}, int64_t{mc.n_embd},
                    int64_t{mc.n_head}, int64_t{mc.n_head_kv}, int64_t{mc.head_dim},
                    int64_t{mc.n_ff}}) {
    x.AddValue(v);
  }
  x.AddValue(mc.norm_eps);
  x.AddValue(mc.embd_scale);
  const RopeParams& r = mc.rope;
  x.AddValue(static_cast<int>(r.layout));
  x.AddValue(r.n_rot);
  x.AddValue(r.freq_base);
  x.AddValue(static_cast<int>(r.scaling));
  x.AddValue(r.factor);
  x.AddValue(r.original_ctx);
  x.AddValue(r.beta_fast);
  x.AddValue(r.beta_slow);
  x.AddValue(r.attn_factor);
  const ModelWeights& w = model.weights();
  AddTensor(&x, w.tok_embd);
  for (int32_t l = 0; l < first_layer; ++l) {
    const LayerWeights& lw = w.layers[static_cast<size_t>(l)];
    for (const Tensor* t : {&lw.attn_norm, &lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.ffn_norm,
                            &lw.w_gate, &lw.w_up, &lw.w_down}) {
      AddTensor(&x, *t);
    }
  }
  BottomCache c;
  c.dir_ = dir;
  c.n_embd_ = mc.n_embd;
  c.fp_lo_ = x.lo();
  c.fp_hi_ = x.hi();
  return c;
}

BottomCache::Key BottomCache::KeyOf(int64_t start_pos, std::span<const TokenId> ids) const {
  Hasher x;
  x.AddValue(fp_lo_);
  x.AddValue(fp_hi_);
  x.AddValue(start_pos);
  x.AddValue(static_cast<int64_t>(ids.size()));
  x.Add(ids.data(), ids.size_bytes());
  return Key{x.lo(), x.hi()};
}

std::string BottomCache::PathOf(const Key& k) const {
  char name[40];
  std::snprintf(name, sizeof name, "%016llx%016llx.bin", static_cast<unsigned long long>(k.hi),
                static_cast<unsigned long long>(k.lo));
  return dir_ + "/" + name;
}

bool BottomCache::Read(int64_t start_pos, std::span<const TokenId> ids, std::vector<float>* h) {
  const Key k = KeyOf(start_pos, ids);
  std::ifstream in(PathOf(k), std::ios::binary);
  if (!in) {
    ++stats_.misses;
    return false;
  }
  const auto T = static_cast<int64_t>(ids.size());
  Header hd{};
  h->resize(static_cast<size_t>(T * n_embd_));
  const bool ok =
      in.read(reinterpret_cast<char*>(&hd), sizeof hd) &&
      std::memcmp(hd.magic, kMagic, sizeof kMagic) == 0 && hd.key_lo == k.lo &&
      hd.key_hi == k.hi && hd.n_tokens == T && hd.n_embd == n_embd_ &&
      in.read(reinterpret_cast<char*>(h->data()), static_cast<std::streamsize>(h->size() * 4)) &&
      in.peek() == std::char_traits<char>::eof() && PayloadHash(*h) == hd.payload_hash;
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
  const Key k = KeyOf(start_pos, ids);
  Header hd{};
  std::memcpy(hd.magic, kMagic, sizeof kMagic);
  hd.key_lo = k.lo;
  hd.key_hi = k.hi;
  hd.n_tokens = static_cast<int64_t>(ids.size());
  hd.n_embd = n_embd_;
  hd.payload_hash = PayloadHash(h);
  const std::string path = PathOf(k);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(&hd), sizeof hd);
    out.write(reinterpret_cast<const char*>(h.data()), static_cast<std::streamsize>(h.size_bytes()));
    out.close();
    if (!out) {
      std::remove(tmp.c_str());
      return IoError("bottom cache: cannot write " + tmp + " (disk full?)");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    return IoError("bottom cache: cannot rename " + tmp + " to " + path + ": " + ec.message());
  }
  return Status::Ok();
}

}  // namespace muninn::model::train
