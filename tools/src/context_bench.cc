#include "context_bench.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "app_config.h"

namespace muninn::tools {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Peak resident set size of this process so far, in bytes (Linux reports KiB).
int64_t PeakRssBytes() {
  rusage u{};
  if (getrusage(RUSAGE_SELF, &u) != 0) return -1;
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

// Current resident set size from /proc/self/statm (resident pages × page size).
int64_t CurrentRssBytes() {
  std::ifstream in("/proc/self/statm");
  int64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return -1;
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

int64_t DirectoryBytes(const std::filesystem::path& dir) {
  int64_t total = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec)) total += static_cast<int64_t>(it->file_size(ec));
  }
  return total;
}

struct DecodeFigures {
  std::vector<double> samples_ts;  // tok/s per timed run
  double mean = 0.0;
  double stddev = 0.0;
  int64_t memory_tokens = 0;  // memory tokens the window attended to (re-read: excerpt tokens)
  double prompt_s = 0.0;      // mean time of Begin (retrieval + prompt), seconds

  void Finish() {
    double sum = 0;
    for (double v : samples_ts) sum += v;
    mean = samples_ts.empty() ? 0.0 : sum / static_cast<double>(samples_ts.size());
    double var = 0;
    for (double v : samples_ts) var += (v - mean) * (v - mean);
    stddev = samples_ts.size() > 1 ? std::sqrt(var / static_cast<double>(samples_ts.size() - 1)) : 0.0;
  }
};

// One run: Begin(prompt) then n_gen greedy Steps. Timed into `d` unless `warm_up`.
Status DecodeRun(retriever::LongContextSession& session, std::span<const model::TokenId> prompt,
                 const std::string& query, const ContextBenchOptions& o, bool warm_up,
                 DecodeFigures* d) {
  // Re-read mode: the retrieved chunks' tokens precede the prompt, as `ask` puts them there.
  std::vector<model::TokenId> ids;
  if (session.options().has(retriever::kModeReread)) {
    ASSIGN_OR_RETURN(auto excerpts, session.RetrieveExcerpts(query));
    for (const auto& e : excerpts) ids.insert(ids.end(), e.tokens.begin(), e.tokens.end());
  }
  const int64_t excerpt_tokens = static_cast<int64_t>(ids.size());
  ids.insert(ids.end(), prompt.begin(), prompt.end());
  if (static_cast<int64_t>(ids.size()) + o.n_gen > session.options().local_window) {
    return InvalidArgumentError("the prompt, the re-read excerpts and -n do not fit the local "
                                "window; lower --prompt-tokens or -n");
  }
  const auto t_prompt = Clock::now();
  RETURN_IF_ERROR(session.Begin(ids, query));
  const double prompt_s = Seconds(t_prompt);
  d->memory_tokens = session.retrieved().n_tokens() + excerpt_tokens;
  const auto t0 = Clock::now();
  for (int32_t i = 0; i < o.n_gen; ++i) {
    const auto logits = session.logits();
    const auto next = static_cast<model::TokenId>(
        std::max_element(logits.begin(), logits.end()) - logits.begin());
    RETURN_IF_ERROR(session.Step(next));
  }
  const double s = Seconds(t0);
  if (!warm_up) {
    d->prompt_s += prompt_s / o.reps;
    d->samples_ts.push_back(o.n_gen / s);
  }
  return Status::Ok();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int Fail(const Status& s) {
  std::fprintf(stderr, "muninn bench: %s\n", s.ToString().c_str());
  return s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kNotFound ? 2 : 1;
}

}  // namespace

int RunContextBench(const RuntimeFlags& runtime_flags, const ContextBenchOptions& o) {
  if (o.depth_tokens < 1 || o.n_gen < 1 || o.n_prompt < 1 || o.reps < 1) {
    return Fail(InvalidArgumentError("--memory-depth, -n, --prompt-tokens and -r must be >= 1"));
  }
  if (runtime_flags.no_memory) {
    return Fail(InvalidArgumentError("--memory-depth measures memory; drop --no-memory"));
  }
  const std::string text_path = o.text_path.empty() ? RepoRoot() + "/data/kjv.txt" : o.text_path;
  auto read = ReadFile(text_path);
  if (!read.ok()) {
    return Fail(read.status().WithContext("run scripts/setup.sh for data/kjv.txt, or pass --text"));
  }
  const std::string text = std::move(read).value();

  // A fresh on-disk bank, so that its size on disk is measured; removed at the end.
  const std::filesystem::path bank_dir =
      runtime_flags.bank.empty()
          ? std::filesystem::temp_directory_path() / ("muninn_ctxbench_" + std::to_string(getpid()))
          : std::filesystem::path(runtime_flags.bank);
  if (std::filesystem::exists(bank_dir)) {
    return Fail(InvalidArgumentError("bank directory '" + bank_dir.string() +
                                     "' exists; the benchmark needs a new one"));
  }
  RuntimeFlags rf = runtime_flags;
  rf.bank = bank_dir.string();
  rf.create_bank = true;
  struct Cleanup {
    std::filesystem::path dir;
    bool remove;
    ~Cleanup() {
      std::error_code ec;
      if (remove) std::filesystem::remove_all(dir, ec);
    }
  } cleanup{bank_dir, runtime_flags.bank.empty()};

  const auto t_load = Clock::now();
  auto rt = Runtime::Open(rf);
  if (!rt.ok()) return Fail(rt.status());
  const double load_s = Seconds(t_load);
  retriever::LongContextSession& session = (*rt)->session();
  const model::Tokenizer& tok = (*rt)->tokenizer();

  const std::vector<model::TokenId> all = tok.Encode(text, false, false);
  if (static_cast<int64_t>(all.size()) < o.depth_tokens + o.n_prompt) {
    return Fail(InvalidArgumentError("'" + text_path + "' has " + std::to_string(all.size()) +
                                     " tokens, fewer than --memory-depth + --prompt-tokens"));
  }
  const auto depth = std::span<const model::TokenId>(all).subspan(0, static_cast<size_t>(o.depth_tokens));
  const auto prompt = std::span<const model::TokenId>(all).subspan(static_cast<size_t>(o.depth_tokens),
                                                                   static_cast<size_t>(o.n_prompt));
  const std::string query = tok.Decode(prompt, true);

  const int64_t rss_before = CurrentRssBytes();
  const auto t_ingest = Clock::now();
  std::fprintf(stderr, "[bench] ingesting %lld tokens of %s\n", static_cast<long long>(o.depth_tokens),
               text_path.c_str());
  auto stats = session.IngestTokens(/*doc_id=*/1, depth, 0);
  if (!stats.ok()) return Fail(stats.status());
  if (auto s = (*rt)->bank()->Flush(); !s.ok()) return Fail(s);
  const double ingest_s = Seconds(t_ingest);
  const int64_t peak_rss = PeakRssBytes();
  const memory::BankStats bs = (*rt)->bank()->Stats();
  const int64_t disk_bytes = DirectoryBytes(bank_dir);

  // Depth 0: a second runtime, same model and configuration, memory on with an empty bank in RAM
  // (retrieval finds nothing, the retrieval layers run plain). Its runs alternate with the
  // depth-N runs (which goes first alternates too), so that the machine's drift and noise fall on
  // both alike; the ratio is the median of the per-pair ratios.
  RuntimeFlags rf0 = runtime_flags;
  rf0.bank.clear();
  rf0.create_bank = true;
  auto rt0 = Runtime::Open(rf0);
  if (!rt0.ok()) return Fail(rt0.status());
  retriever::LongContextSession& session0 = (*rt0)->session();
  DecodeFigures d0, dn;
  std::vector<double> pair_ratios;
  for (int32_t r = -1; r < o.reps; ++r) {
    const bool warm_up = r < 0;
    const bool zero_first = r % 2 == 0;
    for (int k = 0; k < 2; ++k) {
      const bool zero = (k == 0) == zero_first;
      const Status st = DecodeRun(zero ? session0 : session, prompt, query, o, warm_up,
                                  zero ? &d0 : &dn);
      if (!st.ok()) return Fail(st);
    }
    if (!warm_up) pair_ratios.push_back(dn.samples_ts.back() / d0.samples_ts.back());
  }
  d0.Finish();
  dn.Finish();

  const double per_1k = 1000.0 / static_cast<double>(o.depth_tokens);
  const double ratio = Median(pair_ratios);
  const double ratio_of_means = d0.mean > 0 ? dn.mean / d0.mean : 0.0;
  // ThreadPool(0) takes every hardware thread.
  const int threads = runtime_flags.threads > 0 ? runtime_flags.threads
                                                : static_cast<int>(std::thread::hardware_concurrency());
  if (o.json) {
    nlohmann::json j = {
        {"model", (*rt)->config().model_path},
        {"embedder", (*rt)->config().embedder},
        {"threads", threads},
        {"device", (*rt)->model().backend()->name()},
        {"load_s", load_s},
        {"ingest_tokens", stats->n_tokens},
        {"ingest_chunks", stats->n_chunks},
        {"ingest_s", ingest_s},
        {"ingest_tokens_per_s", static_cast<double>(stats->n_tokens) / ingest_s},
        {"rss_before_ingest_bytes", rss_before},
        {"peak_rss_bytes", peak_rss},
        {"bank_stored_bytes", bs.stored_bytes},
        {"bank_kv_bytes", bs.kv_bytes},
        {"bank_disk_bytes", disk_bytes},
        {"bank_disk_bytes_per_1k_tokens", static_cast<double>(disk_bytes) * per_1k},
        {"decode_depth0_ts", d0.mean},
        {"decode_depth0_stddev", d0.stddev},
        {"decode_depthN_ts", dn.mean},
        {"decode_depthN_stddev", dn.stddev},
        {"decode_depthN_memory_tokens", dn.memory_tokens},
        {"prompt_depth0_s", d0.prompt_s},
        {"prompt_depthN_s", dn.prompt_s},
        {"memory_modes", session.options().use_memory ? retriever::MemoryModesName(session.options().modes) : "none"},
        {"decode_ratio", ratio},
        {"decode_ratio_of_means", ratio_of_means},
        {"decode_pair_ratios", pair_ratios},
        {"n_gen", o.n_gen},
        {"reps", o.reps}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model:    %s (embedder %s, %d threads, %s)\n", (*rt)->config().model_path.c_str(),
              (*rt)->config().embedder.c_str(), threads, (*rt)->model().backend()->name().c_str());
  std::printf("ingest:   %lld tokens (%lld chunks) in %.1f s = %.0f tokens/s\n",
              static_cast<long long>(stats->n_tokens), static_cast<long long>(stats->n_chunks),
              ingest_s, static_cast<double>(stats->n_tokens) / ingest_s);
  std::printf("memory:   peak RSS %.0f MiB (%.0f MiB before ingest)\n", peak_rss / 1048576.0,
              rss_before / 1048576.0);
  std::printf("bank:     %.1f MiB on disk = %.1f KiB per 1k tokens (K/V %.1f MiB)\n",
              disk_bytes / 1048576.0, static_cast<double>(disk_bytes) * per_1k / 1024.0,
              bs.kv_bytes / 1048576.0);
  std::printf("decode:   tg%d at depth 0: %.2f ± %.2f tok/s; at depth %lld (%lld memory tokens "
              "attended): %.2f ± %.2f tok/s; ratio %.2f (median of %zu interleaved pairs; "
              "ratio of the means %.2f)\n",
              o.n_gen, d0.mean, d0.stddev, static_cast<long long>(o.depth_tokens),
              static_cast<long long>(dn.memory_tokens), dn.mean, dn.stddev, ratio,
              pair_ratios.size(), ratio_of_means);
  return 0;
}

}  // namespace muninn::tools
