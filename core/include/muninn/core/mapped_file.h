// MappedFile: a read-only memory map of a whole file, unmapped when the object dies.
// Thread-safe for concurrent reads. An empty file maps to a valid object with size() == 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "muninn/core/status.h"

namespace muninn {

class MappedFile {
 public:
  // NotFound / IoError naming the path when the file cannot be opened or mapped, InvalidArgument
  // when it is not a regular file.
  static StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

  // The bytes [offset, offset + length), or OutOfRange if they are not all in the file
  // (overflow-safe).
  StatusOr<std::span<const uint8_t>> Range(uint64_t offset, uint64_t length) const;

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const uint8_t* data_;
  size_t size_;
};

}  // namespace muninn
