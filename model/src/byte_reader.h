// ByteReader: bounds-checked little-endian reads from an untrusted byte span.
//
// Every read checks the bytes that remain before touching them; a failed read returns an
// InvalidArgument naming the source, what was being read and the byte offset, and leaves the
// position unchanged. Nothing here allocates more than the bytes actually present.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "muninn/core/status.h"

namespace muninn::model::internal {

class ByteReader {
 public:
  ByteReader(std::span<const uint8_t> bytes, std::string_view source)
      : bytes_(bytes), source_(source) {}

  size_t position() const { return pos_; }
  size_t remaining() const { return bytes_.size() - pos_; }
  size_t size() const { return bytes_.size(); }

  // An error "<source>: <what> at byte <offset>: <detail>".
  Status Error(std::string_view what, std::string_view detail) const {
    return InvalidArgumentError(std::string(source_) + ": " + std::string(what) + " at byte " +
                                std::to_string(pos_) + ": " + std::string(detail));
  }

  template <typename T>
  Status Read(std::string_view what, T* out) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (remaining() < sizeof(T)) {
      return Error(what, "the file ends after " + std::to_string(remaining()) +
                             " more bytes (needs " + std::to_string(sizeof(T)) +
                             "); it is truncated");
    }
    // The project targets little-endian hosts only (x86-64, CUDA); memcpy avoids unaligned UB.
    std::memcpy(out, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::Ok();
  }

  // `n` bytes as a view into the input (no copy).
  Status ReadBytes(std::string_view what, uint64_t n, std::span<const uint8_t>* out) {
    if (n > remaining()) {
      return Error(what, "needs " + std::to_string(n) + " bytes but only " +
                             std::to_string(remaining()) + " remain; the file is truncated or "
                             "the length is corrupt");
    }
    *out = bytes_.subspan(pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return Status::Ok();
  }

  // A GGUF string: u64 length then bytes. Lengths above `max_len` are rejected before any copy.
  Status ReadString(std::string_view what, uint64_t max_len, std::string* out) {
    const size_t start = pos_;
    uint64_t len = 0;
    RETURN_IF_ERROR(Read(what, &len));
    if (len > max_len && len <= remaining()) {
      pos_ = start;
      return Error(what, "length " + std::to_string(len) + " exceeds the limit of " +
                             std::to_string(max_len) + " bytes");
    }
    std::span<const uint8_t> b;
    Status s = ReadBytes(what, len, &b);
    if (!s.ok()) {
      pos_ = start;
      return s;
    }
    out->assign(reinterpret_cast<const char*>(b.data()), b.size());
    return Status::Ok();
  }

 private:
  std::span<const uint8_t> bytes_;
  std::string_view source_;
  size_t pos_ = 0;
};

}  // namespace muninn::model::internal
