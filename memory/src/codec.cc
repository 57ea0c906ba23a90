#include "codec.h"

#include <cstring>
#include <limits>

#include "crc32c.h"
#include "muninn/core/fp16.h"

#include "muninn/core/quant.h"

namespace muninn::memory::internal {
namespace {

void PutU8(std::string* s, uint8_t v) { s->push_back(static_cast<char>(v)); }
void PutU16(std::string* s, uint16_t v) {
  for (int i = 0; i < 2; ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
}
void PutU32(std::string* s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
}
void PutU64(std::string* s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
}
void PutCrc(std::string* s) { PutU32(s, Crc32c(0, s->data(), s->size())); }

// Sequential little-endian reader over untrusted bytes; every Get checks the remaining length.
class Reader {
 public:
  explicit Reader(std::string_view b) : b_(b) {}
  bool U8(uint8_t* v) { return Fixed(v, 1); }
  bool U16(uint16_t* v) { return Fixed(v, 2); }
  bool U32(uint32_t* v) { return Fixed(v, 4); }
  bool U64(uint64_t* v) { return Fixed(v, 8); }
  bool Bytes(size_t n, std::string_view* out) {
    if (n > b_.size() - pos_) return false;
    *out = b_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  size_t pos() const { return pos_; }
  size_t remaining() const { return b_.size() - pos_; }

 private:
  template <typename T>
  bool Fixed(T* v, size_t n) {
    if (n > b_.size() - pos_) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; ++i) {
      x |= static_cast<uint64_t>(static_cast<uint8_t>(b_[pos_ + i])) << (8 * i);
    }
    *v = static_cast<T>(x);
    pos_ += n;
    return true;
  }
  std::string_view b_;
  size_t pos_ = 0;
};

// Checks the trailing CRC of a value and returns the bytes before it.
StatusOr<std::string_view> CheckTrailingCrc(std::string_view bytes, const char* what) {
  if (bytes.size() < 4) return DataLossError(std::string(what) + " is truncated");
  const std::string_view body = bytes.substr(0, bytes.size() - 4);
  Reader r(bytes.substr(bytes.size() - 4));
  uint32_t stored = 0;
  r.U32(&stored);
  if (Crc32c(0, body.data(), body.size()) != stored) {
    return DataLossError(std::string(what) + " fails its checksum (corrupt data)");
  }
  return body;
}

void StoreBE64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (56 - 8 * i)) & 0xffu);
}

// Converts one packed f32 row to a stored row of `dtype`.
Status ConvertRow(DType dtype, const float* src, void* dst, int64_t n) {
  switch (dtype) {
    case DType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = Fp32ToFp16(src[i]);
      return Status::Ok();
    }
    case DType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = Fp32ToBf16(src[i]);
      return Status::Ok();
    }
    default:
      return QuantizeRow(dtype, src, dst, n);
  }
}

}  // namespace

std::string IdKey(uint64_t id) {
  std::string k(8, '\0');
  StoreBE64(k.data(), id);
  return k;
}

StatusOr<uint64_t> ParseIdKey(std::string_view key) {
  if (key.size() != 8) return DataLossError("chunk key has " + std::to_string(key.size()) + " bytes, want 8");
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(key[static_cast<size_t>(i)]);
  return v;
}

std::string DocKey(uint64_t doc_id, uint64_t id) {
  std::string k(16, '\0');
  StoreBE64(k.data(), doc_id);
  StoreBE64(k.data() + 8, id);
  return k;
}

std::string DocPrefix(uint64_t doc_id) { return IdKey(doc_id); }

std::string EncodeBankHeader(const BankHeader& h) {
  std::string s;
  PutU32(&s, kBankMagic);
  PutU32(&s, h.version);
  PutU64(&s, static_cast<uint64_t>(h.dim));
  PutU64(&s, static_cast<uint64_t>(h.n_head_kv));
  PutU64(&s, static_cast<uint64_t>(h.head_dim));
  PutU8(&s, static_cast<uint8_t>(h.kv_dtype));
  PutU32(&s, static_cast<uint32_t>(h.index_factory.size()));
  s += h.index_factory;
  PutU32(&s, static_cast<uint32_t>(h.kv_layers.size()));
  for (int32_t l : h.kv_layers) PutU32(&s, static_cast<uint32_t>(l));
  PutU64(&s, static_cast<uint64_t>(h.state_dim));
  PutCrc(&s);
  return s;
}

StatusOr<BankHeader> DecodeBankHeader(std::string_view bytes) {
  ASSIGN_OR_RETURN(std::string_view body, CheckTrailingCrc(bytes, "bank header"));
  Reader r(body);
  uint32_t magic = 0, version = 0, flen = 0, nl = 0;
  uint64_t dim = 0, nh = 0, hd = 0, sd = 0;
  uint8_t dt = 0;
  std::string_view factory;
  if (!r.U32(&magic) || !r.U32(&version)) return DataLossError("bank header is malformed");
  if (magic != kBankMagic) return DataLossError("not a muninn memory bank (bad header magic)");
  if (version == 1) {
    return FailedPreconditionError(
        "this memory bank was written by an older muninn (bank format 1: one memory layer, no "
        "memory modes); this build reads format " + std::to_string(kFormatVersion) +
        ". Ingest the documents again into a new bank (`muninn ingest FILE --bank NEW_DIR`)");
  }
  if (version != kFormatVersion) {
    return FailedPreconditionError("memory bank format version " + std::to_string(version) +
                                   " is not supported by this build (want " +
                                   std::to_string(kFormatVersion) + ")");
  }
  BankHeader h;
  if (!r.U64(&dim) || !r.U64(&nh) || !r.U64(&hd) || !r.U8(&dt) || !r.U32(&flen) ||
      !r.Bytes(flen, &factory) || !r.U32(&nl) || nl > 4096 ||
      static_cast<uint64_t>(nl) * 4 > r.remaining()) {
    return DataLossError("bank header is malformed");
  }
  for (uint32_t i = 0; i < nl; ++i) {
    uint32_t l = 0;
    r.U32(&l);
    h.kv_layers.push_back(static_cast<int32_t>(l));
  }
  if (!r.U64(&sd) || r.remaining() != 0) return DataLossError("bank header is malformed");
  constexpr uint64_t kMaxDim = 1u << 20;
  const bool no_kv = nh == 0 && hd == 0;
  if (dim == 0 || dim > kMaxDim || nh > kMaxDim || hd > kMaxDim || sd > kMaxDim ||
      (!no_kv && (nh == 0 || hd == 0)) || (no_kv && !h.kv_layers.empty()) ||
      dt >= static_cast<uint8_t>(DType::kCount) || !IsSupportedKvDType(static_cast<DType>(dt))) {
    return DataLossError("bank header holds an impossible shape or dtype");
  }
  for (size_t i = 0; i < h.kv_layers.size(); ++i) {
    if (h.kv_layers[i] < 0 || (i > 0 && h.kv_layers[i] <= h.kv_layers[i - 1])) {
      return DataLossError("bank header lists its K/V layers out of order");
    }
  }
  h.version = version;
  h.dim = static_cast<int64_t>(dim);
  h.n_head_kv = static_cast<int64_t>(nh);
  h.head_dim = static_cast<int64_t>(hd);
  h.kv_dtype = static_cast<DType>(dt);
  h.index_factory = std::string(factory);
  h.state_dim = static_cast<int64_t>(sd);
  return h;
}

std::string EncodeBankState(const BankState& st) {
  std::string s;
  PutU64(&s, st.next_id);
  PutU64(&s, st.mutation_seq);
  PutU64(&s, st.evicted_chunks);
  PutCrc(&s);
  return s;
}

StatusOr<BankState> DecodeBankState(std::string_view bytes) {
  ASSIGN_OR_RETURN(std::string_view body, CheckTrailingCrc(bytes, "bank state"));
  Reader r(body);
  BankState st;
  if (!r.U64(&st.next_id) || !r.U64(&st.mutation_seq) || !r.U64(&st.evicted_chunks) ||
      r.remaining() != 0) {
    return DataLossError("bank state is malformed");
  }
  return st;
}

std::string EncodeRecord(const RecordValue& rv) {
  std::string s;
  s.reserve(kRecordBytes);
  PutU8(&s, 2);  // record version
  PutU8(&s, 0);
  PutU16(&s, 0);
  PutU64(&s, rv.doc_id);
  PutU64(&s, static_cast<uint64_t>(rv.position));
  PutU32(&s, rv.n_tokens);
  PutU32(&s, rv.retrieval_count);
  PutU64(&s, rv.kv_bytes);
  PutU64(&s, rv.content_bytes);
  PutU64(&s, rv.states_bytes);
  PutCrc(&s);
  return s;
}

StatusOr<RecordValue> DecodeRecord(std::string_view bytes) {
  if (bytes.size() != kRecordBytes) {
    return DataLossError("chunk record has " + std::to_string(bytes.size()) + " bytes, want " +
                         std::to_string(kRecordBytes));
  }
  ASSIGN_OR_RETURN(std::string_view body, CheckTrailingCrc(bytes, "chunk record"));
  Reader r(body);
  uint8_t version = 0, pad8 = 0;
  uint16_t pad16 = 0;
  uint64_t pos = 0;
  RecordValue rv;
  r.U8(&version);
  r.U8(&pad8);
  r.U16(&pad16);
  r.U64(&rv.doc_id);
  r.U64(&pos);
  r.U32(&rv.n_tokens);
  r.U32(&rv.retrieval_count);
  r.U64(&rv.kv_bytes);
  r.U64(&rv.content_bytes);
  r.U64(&rv.states_bytes);
  if (version != 2) return DataLossError("chunk record version " + std::to_string(version) + " unknown");
  rv.position = static_cast<int64_t>(pos);
  if (rv.position < 0) return DataLossError("chunk record has a negative position");
  return rv;
}

std::string EncodeContent(std::span<const int32_t> tokens, std::string_view text) {
  std::string s;
  s.reserve(12 + tokens.size() * 4 + text.size());
  PutU32(&s, static_cast<uint32_t>(tokens.size()));
  for (int32_t t : tokens) PutU32(&s, static_cast<uint32_t>(t));
  PutU32(&s, static_cast<uint32_t>(text.size()));
  s += text;
  PutCrc(&s);
  return s;
}

Status DecodeContent(std::string_view bytes, std::vector<int32_t>* tokens, std::string* text) {
  ASSIGN_OR_RETURN(std::string_view body, CheckTrailingCrc(bytes, "chunk content"));
  Reader r(body);
  uint32_t n = 0;
  if (!r.U32(&n) || static_cast<uint64_t>(n) * 4 > r.remaining()) {
    return DataLossError("chunk content token count exceeds its bytes");
  }
  tokens->resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t t = 0;
    r.U32(&t);
    (*tokens)[i] = static_cast<int32_t>(t);
  }
  uint32_t tl = 0;
  std::string_view tv;
  if (!r.U32(&tl) || !r.Bytes(tl, &tv) || r.remaining() != 0) {
    return DataLossError("chunk content text length does not match its bytes");
  }
  text->assign(tv);
  return Status::Ok();
}

std::string EncodeEmbedding(std::span<const float> v) {
  std::string s(v.size() * 4, '\0');
  // x86-64 and every target muninn supports are little-endian: the float bytes are the format.
  std::memcpy(s.data(), v.data(), v.size() * 4);
  PutCrc(&s);
  return s;
}

Status DecodeEmbedding(std::string_view bytes, int64_t dim, float* out) {
  ASSIGN_OR_RETURN(std::string_view body, CheckTrailingCrc(bytes, "embedding"));
  if (body.size() != static_cast<size_t>(dim) * 4) {
    return DataLossError("embedding has " + std::to_string(body.size() / 4) +
                         " floats, the bank dimension is " + std::to_string(dim));
  }
  std::memcpy(out, body.data(), body.size());
  return Status::Ok();
}

std::string EncodeStates(std::span<const float> states, std::span<const int32_t> next_tokens,
                         int64_t state_dim) {
  const size_t n = next_tokens.size();
  MUNINN_CHECK_EQ(states.size(), n * static_cast<size_t>(state_dim));
  std::string s;
  s.reserve(20 + states.size() * 2 + n * 4 + 4);
  PutU32(&s, kStatesMagic);
  PutU16(&s, 1);
  PutU16(&s, 0);
  PutU32(&s, static_cast<uint32_t>(n));
  PutU32(&s, static_cast<uint32_t>(state_dim));
  for (float x : states) PutU16(&s, Fp32ToFp16(x));
  for (int32_t t : next_tokens) PutU32(&s, static_cast<uint32_t>(t));
  PutCrc(&s);
  return s;
}

Status DecodeStates(std::string_view bytes, int64_t n_tokens, int64_t state_dim, float* states,
                    int32_t* next_tokens) {
  ASSIGN_OR_RETURN(std::string_view body, CheckTrailingCrc(bytes, "token states"));
  Reader r(body);
  uint32_t magic = 0, nt = 0, sd = 0;
  uint16_t version = 0, pad = 0;
  if (!r.U32(&magic) || !r.U16(&version) || !r.U16(&pad) || !r.U32(&nt) || !r.U32(&sd) ||
      magic != kStatesMagic || version != 1) {
    return DataLossError("token states have a bad magic or version");
  }
  if (nt != n_tokens || sd != state_dim ||
      r.remaining() != static_cast<size_t>(n_tokens) * (static_cast<size_t>(state_dim) * 2 + 4)) {
    return DataLossError("token states do not match the chunk's tokens or the bank's state width");
  }
  const int64_t total = n_tokens * state_dim;
  for (int64_t i = 0; i < total; ++i) {
    uint16_t h = 0;
    r.U16(&h);
    states[i] = Fp16ToFp32(h);
  }
  for (int64_t i = 0; i < n_tokens; ++i) {
    uint32_t t = 0;
    r.U32(&t);
    next_tokens[i] = static_cast<int32_t>(t);
  }
  return Status::Ok();
}

bool IsSupportedKvDType(DType dtype) {
  return dtype == DType::kF16 || dtype == DType::kBF16 || dtype == DType::kQ8_0;
}

StatusOr<size_t> KvHalfBytes(DType dtype, int64_t n_head_kv, int64_t n_tokens, int64_t head_dim) {
  const std::optional<size_t> row = RowBytes(dtype, head_dim);
  if (!row) {
    return InvalidArgumentError("head_dim " + std::to_string(head_dim) + " does not fit dtype " +
                                std::string(DTypeName(dtype)) + " (block size " +
                                std::to_string(BlockSize(dtype)) + ")");
  }
  if (n_head_kv < 0 || n_tokens < 0) return InvalidArgumentError("negative K/V shape");
  const auto rows = static_cast<uint64_t>(n_head_kv) * static_cast<uint64_t>(n_tokens);
  if (rows != 0 && *row > std::numeric_limits<size_t>::max() / 4 / rows) {
    return InvalidArgumentError("K/V size overflows");
  }
  return static_cast<size_t>(rows) * *row;
}

StatusOr<std::string> EncodeKv(DType dtype, const Tensor& k, const Tensor& v) {
  if (!IsSupportedKvDType(dtype)) {
    return InvalidArgumentError("K/V dtype " + std::string(DTypeName(dtype)) + " is not supported");
  }
  for (const Tensor* t : {&k, &v}) {
    if (!t->defined() || t->dtype() != DType::kF32 || t->ndim() != 3 || !t->device().is_cpu() ||
        !t->rows_contiguous()) {
      return InvalidArgumentError("K and V must be f32 host tensors [n_head_kv, n_tokens, head_dim] "
                                  "with packed rows");
    }
  }
  if (!(k.shape() == v.shape())) {
    return InvalidArgumentError("K " + k.shape().ToString() + " and V " + v.shape().ToString() +
                                " differ in shape");
  }
  const int64_t nh = k.dim(0), nt = k.dim(1), hd = k.dim(2);
  ASSIGN_OR_RETURN(size_t half, KvHalfBytes(dtype, nh, nt, hd));
  const size_t row_bytes = *RowBytes(dtype, hd);
  std::string s;
  s.resize(kKvHeaderBytes + 2 * half);
  char* payload = s.data() + kKvHeaderBytes;
  size_t off = 0;
  for (const Tensor* t : {&k, &v}) {
    for (int64_t h = 0; h < nh; ++h) {
      for (int64_t i = 0; i < nt; ++i) {
        const int64_t outer[2] = {h, i};
        const auto* src = static_cast<const float*>(t->row_ptr(outer));
        RETURN_IF_ERROR(ConvertRow(dtype, src, payload + off, hd));
        off += row_bytes;
      }
    }
  }
  std::string h;
  PutU32(&h, kKvMagic);
  PutU16(&h, 1);
  PutU8(&h, static_cast<uint8_t>(dtype));
  PutU8(&h, 0);
  PutU32(&h, static_cast<uint32_t>(nh));
  PutU32(&h, static_cast<uint32_t>(nt));
  PutU32(&h, static_cast<uint32_t>(hd));
  PutU32(&h, 0);  // reserved
  PutU64(&h, 2 * half);
  PutU32(&h, Crc32c(0, payload, 2 * half));
  PutCrc(&h);  // header CRC
  MUNINN_CHECK_EQ(h.size(), kKvHeaderBytes);
  std::memcpy(s.data(), h.data(), kKvHeaderBytes);
  return s;
}

StatusOr<KvHeader> DecodeKvHeader(std::string_view bytes) {
  if (bytes.size() < kKvHeaderBytes) return DataLossError("K/V blob is truncated");
  ASSIGN_OR_RETURN(std::string_view hbody,
                   CheckTrailingCrc(bytes.substr(0, kKvHeaderBytes), "K/V header"));
  Reader r(hbody);
  uint32_t magic = 0, nh = 0, nt = 0, hd = 0, reserved = 0;
  uint16_t version = 0;
  uint8_t dt = 0, pad = 0;
  KvHeader kh;
  r.U32(&magic);
  r.U16(&version);
  r.U8(&dt);
  r.U8(&pad);
  r.U32(&nh);
  r.U32(&nt);
  r.U32(&hd);
  r.U32(&reserved);
  r.U64(&kh.payload_bytes);
  r.U32(&kh.payload_crc);
  if (magic != kKvMagic || version != 1) return DataLossError("K/V blob has a bad magic or version");
  if (dt >= static_cast<uint8_t>(DType::kCount) || !IsSupportedKvDType(static_cast<DType>(dt))) {
    return DataLossError("K/V blob has an unsupported dtype");
  }
  kh.dtype = static_cast<DType>(dt);
  kh.n_head_kv = nh;
  kh.n_tokens = nt;
  kh.head_dim = hd;
  StatusOr<size_t> half = KvHalfBytes(kh.dtype, nh, nt, hd);
  if (!half.ok() || kh.payload_bytes != 2 * *half ||
      kh.payload_bytes != bytes.size() - kKvHeaderBytes) {
    return DataLossError("K/V blob payload size does not match its header");
  }
  return kh;
}

Status VerifyKv(std::string_view bytes) {
  ASSIGN_OR_RETURN(KvHeader kh, DecodeKvHeader(bytes));
  if (Crc32c(0, bytes.data() + kKvHeaderBytes, kh.payload_bytes) != kh.payload_crc) {
    return DataLossError("K/V payload fails its checksum (corrupt data)");
  }
  return Status::Ok();
}

void DequantizeKvRow(DType dtype, const void* src, float* dst, int64_t n) {
  switch (dtype) {
    case DType::kF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = Fp16ToFp32(s[i]);
      return;
    }
    case DType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFp32(s[i]);
      return;
    }
    default:
      DequantizeRow(dtype, src, dst, n);
      return;
  }
}

}  // namespace muninn::memory::internal
