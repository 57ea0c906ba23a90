// libFuzzer harness: SafetensorsFile::Parse on arbitrary bytes must return OK or an error, never
// crash or read out of bounds; every tensor of a file that parses must be readable.
#include <cstddef>
#include <cstdint>
#include <span>

#include "muninn/model/safetensors_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file =
      muninn::model::SafetensorsFile::Parse(std::span<const uint8_t>(data, size), nullptr, "fuzz");
  if (!file.ok()) return 0;
  for (const auto& info : (*file)->tensors()) {
    auto t = (*file)->GetTensor(info);
    if (!t.ok() || info.nbytes == 0) continue;
    const auto* p = static_cast<const volatile uint8_t*>(t->data());
    (void)p[0];
    (void)p[info.nbytes - 1];
  }
  return 0;
}
