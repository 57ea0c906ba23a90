// libFuzzer harness: GgufFile::Parse on arbitrary bytes must return OK or an error, never crash,
// read out of bounds or allocate without bound; every tensor of a file that parses must be
// readable over its whole byte range.
#include <cstddef>
#include <cstdint>
#include <span>

#include "muninn/model/gguf_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = muninn::model::GgufFile::Parse(std::span<const uint8_t>(data, size), nullptr, "fuzz");
  if (!file.ok()) return 0;
  for (const auto& info : (*file)->tensors()) {
    auto t = (*file)->GetTensor(info);
    if (!t.ok() || info.nbytes == 0) continue;
    const auto* p = static_cast<const volatile uint8_t*>(t->data());
    (void)p[0];
    (void)p[info.nbytes - 1];
  }
  for (const auto& e : (*file)->metadata()) (void)e.value.ToString();
  return 0;
}
