// Private to tools/: `muninn bench --memory-depth N`, the long-context benchmark. It measures what
// the long-context session costs on a real text (data/kjv.txt by default):
//   - ingest of N tokens into an on-disk bank (a temporary directory, removed afterwards): wall
//     time, tokens/s, peak RSS of the process, bank bytes per 1k tokens (RocksDB files + index);
//   - decode (tgM, greedy, one token per step) from a short prompt with memory on, first with an
//     empty bank (depth 0), then after the ingest (depth N: the window retrieves top-k chunks and
//     every retrieval layer attends to them); the ratio depth-N / depth-0 tokens/s.
// Ingest runs first on a fresh process so that peak RSS is the ingest's own.
#pragma once

#include <cstdint>
#include <string>

#include "runtime.h"

namespace muninn::tools {

struct ContextBenchOptions {
  int64_t depth_tokens = 80000;  // tokens ingested into memory
  int32_t n_gen = 128;           // decode steps per repetition
  int32_t n_prompt = 64;         // prompt tokens before decoding
  int32_t reps = 3;              // decode repetitions at each depth (after one warm-up)
  std::string text_path;         // "" = data/kjv.txt under the repository root
  bool json = false;
};

// Runs the benchmark and prints a table (or JSON) on stdout; returns the process exit code.
int RunContextBench(const RuntimeFlags& runtime_flags, const ContextBenchOptions& options);

}  // namespace muninn::tools
