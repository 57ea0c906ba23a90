// Tokenizer throughput on the real vocabularies (SmolLM2 GGUF byte-level BPE, MiniLM WordPiece):
// bytes per second for Encode and Decode over a mixed English/code/Unicode text. Benchmarks whose
// model file is absent report an error instead of a figure.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <memory>
#include <string>

#include "muninn/model/gguf_file.h"
#include "muninn/model/tokenizer.h"
#include "muninn/model/tokenizer_factory.h"

namespace muninn::model {
namespace {

std::string SourceDir() {
  // bench/model/tokenizer_bench.cc -> repository root.
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path().string();
}

std::string SampleText() {
  const std::string paragraph =
      "The memory bank keeps the key/value pairs of every past chunk; the retriever picks the "
      "chunks that matter for the current window. Numbers like 1234567 and 3.14159 appear, "
      "as do accents (café, naïve), CJK (長い文書を読む) and emoji 😀.\n"
      "def f(x):\n    return x ** 2  # square\n\n";
  std::string text;
  while (text.size() < (64 << 10)) text += paragraph;
  return text;
}

std::unique_ptr<Tokenizer> LoadOrNull(const std::string& path, benchmark::State& state) {
  if (!std::filesystem::exists(path)) {
    state.SkipWithError(("absent: " + path).c_str());
    return nullptr;
  }
  auto t = LoadTokenizer(path);
  if (!t.ok()) {
    state.SkipWithError(t.status().ToString().c_str());
    return nullptr;
  }
  return std::move(t).value();
}

void BM_Encode(benchmark::State& state, const std::string& rel_path) {
  auto t = LoadOrNull(SourceDir() + "/" + rel_path, state);
  if (t == nullptr) return;
  const std::string text = SampleText();
  size_t n_tokens = 0;
  for (auto _ : state) {
    std::vector<TokenId> ids = t->Encode(text, true, false);
    n_tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(n_tokens);
  state.counters["tokens/s"] = benchmark::Counter(
      static_cast<double>(n_tokens) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}

void BM_Decode(benchmark::State& state, const std::string& rel_path) {
  auto t = LoadOrNull(SourceDir() + "/" + rel_path, state);
  if (t == nullptr) return;
  const std::string text = SampleText();
  const std::vector<TokenId> ids = t->Encode(text, false, false);
  for (auto _ : state) {
    std::string out = t->Decode(ids);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

BENCHMARK_CAPTURE(BM_Encode, smollm2_bpe, std::string("models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Encode, minilm_wordpiece, std::string("models/all-MiniLM-L6-v2"))
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Decode, smollm2_bpe, std::string("models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace muninn::model
