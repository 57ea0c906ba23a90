// Child process of MemoryBankCrashTest: opens the bank in argv[1] with full sync and appends
// batches of small chunks forever, printing "ACK <first_id> <count> <doc> <position>" on stdout
// after each append returned OK ("READY" once the bank is open). The parent SIGKILLs it at random moments. Chunk contents are a
// pure function of (doc, position) (tests/memory/memory_test_util.h), so the parent can check them.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "muninn/memory/memory_bank.h"
#include "tests/memory/memory_test_util.h"

using muninn::memory::ChunkInput;
using muninn::memory::MemoryBank;
using muninn::memory::MemoryBankOptions;
using muninn::memory::testing::OwnedChunk;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s BANK_DIR DOC_ID\n", argv[0]);
    return 2;
  }
  MemoryBankOptions o;
  o.path = argv[1];
  o.dim = 16;
  o.n_head_kv = 2;
  o.head_dim = 32;
  o.kv_dtype = muninn::DType::kQ8_0;
  o.index_persist_interval = 5;  // so kills also land in the middle of index saves
  auto bank = MemoryBank::Open(o);
  if (!bank.ok()) {
    std::fprintf(stderr, "open: %s\n", bank.status().ToString().c_str());
    return 1;
  }
  std::printf("READY\n");
  std::fflush(stdout);
  const uint64_t doc = std::strtoull(argv[2], nullptr, 10);
  int64_t position = 0;
  for (uint64_t round = 0;; ++round) {
    const int n = 1 + static_cast<int>(round % 3);
    std::vector<std::unique_ptr<OwnedChunk>> chunks;
    std::vector<ChunkInput> in;
    for (int i = 0; i < n; ++i) {
      chunks.push_back(std::make_unique<OwnedChunk>(doc, position + i * 4, 4, 16, 2, 32));
      in.push_back(chunks.back()->Input());
    }
    auto ids = (*bank)->Append(in);
    if (!ids.ok()) {
      std::fprintf(stderr, "append: %s\n", ids.status().ToString().c_str());
      return 1;
    }
    std::printf("ACK %llu %d %llu %lld\n", static_cast<unsigned long long>((*ids)[0]), n,
                static_cast<unsigned long long>(doc), static_cast<long long>(position));
    std::fflush(stdout);
    position += n * 4;
  }
}
