// CRC-32C (Castagnoli), used to checksum every value the memory bank writes. Uses the SSE4.2
// crc32 instruction when the CPU has it (checked once per call site via a cached flag), a
// byte-wise table otherwise; both give identical results.
#pragma once

#include <cstddef>
#include <cstdint>

namespace muninn::memory::internal {

// Extends `crc` (0 for a fresh checksum) over `n` bytes.
uint32_t Crc32c(uint32_t crc, const void* data, size_t n);

}  // namespace muninn::memory::internal
