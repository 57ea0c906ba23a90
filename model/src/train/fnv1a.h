// Private to the trainer: 64-bit FNV-1a, the checksum of checkpoints (trainer.cc) and of the
// bottom cache's keys and files (bottom_cache.cc). Pass a previous result as `h` to hash several
// pieces as one stream. Not cryptographic.
#pragma once

#include <cstdint>
#include <span>
#include <type_traits>

namespace muninn::model::train {

inline constexpr uint64_t kFnv1aOffset = 0xcbf29ce484222325ull;

inline uint64_t Fnv1a(std::span<const uint8_t> bytes, uint64_t h = kFnv1aOffset) {
  for (uint8_t b : bytes) {
    h ^= b;
    h *= 0x100000001b3ull;
  }
  return h;
}

// The bytes of one trivially copyable value, continued into `h`.
template <class T>
uint64_t Fnv1aOf(const T& v, uint64_t h = kFnv1aOffset) {
  static_assert(std::is_trivially_copyable_v<T>);
  return Fnv1a({reinterpret_cast<const uint8_t*>(&v), sizeof v}, h);
}

}  // namespace muninn::model::train
