#include "muninn/tools/evals.h"

#include <algorithm>
#include <cmath>

namespace muninn::tools {

Status PasskeyOptions::Validate() const {
  if (lengths.empty() || depths.empty()) return InvalidArgumentError("passkey needs lengths and depths");
  for (int64_t l : lengths) {
    if (l < 256 || l > (int64_t{1} << 24)) return InvalidArgumentError("passkey lengths must be in [256, 16M] tokens");
  }
  for (double d : depths) {
    if (!(d >= 0.0 && d <= 1.0)) return InvalidArgumentError("passkey depths must be in [0, 1]");
  }
  if (trials < 1) return InvalidArgumentError("passkey trials must be >= 1");
  if (local_tokens < 64) return InvalidArgumentError("passkey local_tokens must be >= 64");
  return Status::Ok();
}

Status PerplexityOptions::Validate() const {
  if (scored_tokens < 2) return InvalidArgumentError("scored_tokens must be >= 2");
  if (seq_len < scored_tokens) return InvalidArgumentError("seq_len must be >= scored_tokens");
  if (max_windows < 0) return InvalidArgumentError("max_windows must be >= 0");
  return Status::Ok();
}

namespace {

constexpr const char* kIntro =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.\n";
constexpr const char* kFiller =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
constexpr const char* kQuestion = "\nWhat is the pass key? The pass key is";

uint64_t SplitMix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

StatusOr<PasskeyPrompt> BuildPasskeyPrompt(const model::Tokenizer& tok, int64_t length,
                                           double depth, int64_t local_tokens, uint64_t seed) {
  uint64_t s = seed;
  const uint64_t key_num = 10000 + SplitMix(s) % 90000;
  PasskeyPrompt p;
  p.key = std::to_string(key_num);
  const std::string needle = "The pass key is " + p.key + ". Remember it. " + p.key + " is the pass key. ";
  const int64_t filler_tokens = static_cast<int64_t>(tok.Encode(kFiller, false, false).size());
  const int64_t fixed = static_cast<int64_t>(
      tok.Encode(std::string(kIntro) + needle + kQuestion, false, false).size());
  const int64_t repeats = std::max<int64_t>(1, (length - fixed) / std::max<int64_t>(1, filler_tokens));
  const int64_t key_at = static_cast<int64_t>(std::llround(depth * static_cast<double>(repeats)));
  std::string text = kIntro;
  for (int64_t i = 0; i <= repeats; ++i) {
    if (i == key_at) text += needle;
    if (i < repeats) text += kFiller;
  }
  text += kQuestion;
  // Split into prefix and local window at a token boundary.
  const std::vector<model::TokenId> ids = tok.Encode(text, false, false);
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t split = std::max<int64_t>(0, n - local_tokens);
  p.prefix_text = tok.Decode(std::span<const model::TokenId>(ids).subspan(0, static_cast<size_t>(split)));
  p.window_text = tok.Decode(std::span<const model::TokenId>(ids).subspan(static_cast<size_t>(split)));
  return p;
}

StatusOr<std::vector<PasskeyTrial>> RunPasskey(retriever::LongContextSession& session,
                                               const PasskeyOptions& options,
                                               const std::function<Status()>& reset_bank,
                                               const std::function<void(const PasskeyTrial&)>& on_trial) {
  RETURN_IF_ERROR(options.Validate());
  const model::Tokenizer& tok = *session.tokenizer();
  std::vector<PasskeyTrial> out;
  uint64_t seed = options.seed;
  for (int64_t length : options.lengths) {
    for (double depth : options.depths) {
      for (int64_t t = 0; t < options.trials; ++t) {
        ASSIGN_OR_RETURN(PasskeyPrompt p, BuildPasskeyPrompt(tok, length, depth, options.local_tokens, seed++));
        if (reset_bank) RETURN_IF_ERROR(reset_bank());
        PasskeyTrial trial;
        trial.requested_length = length;
        trial.depth = depth;
        trial.key = p.key;
        trial.key_in_window = p.window_text.find(p.key) != std::string::npos;
        const std::vector<model::TokenId> prefix = tok.Encode(p.prefix_text, false, false);
        std::vector<model::TokenId> window = tok.Encode(p.window_text, false, false);
        trial.length = static_cast<int64_t>(prefix.size() + window.size());
        if (session.options().use_memory && !prefix.empty()) {
          RETURN_IF_ERROR(session.IngestTokens(/*doc_id=*/1, prefix, 0).status());
        }
        if (static_cast<int64_t>(window.size()) > session.options().local_window) {
          window.erase(window.begin(), window.end() - session.options().local_window);
        }
        // The query is the question at the end of the window: the window's filler would make
        // every chunk look alike to the embedder.
        const size_t q = std::min<size_t>(window.size(), 32);
        const std::string query =
            tok.Decode(std::span<const model::TokenId>(window).subspan(window.size() - q), true);
        RETURN_IF_ERROR(session.Begin(window, query));
        trial.retrieved_chunks = static_cast<int64_t>(session.retrieved().hits.size());
        for (const auto& h : session.retrieved().hits) {
          if (session.bank() == nullptr) break;
          auto rec = session.bank()->GetChunk(h.id);
          if (rec.ok() && rec->text.find(p.key) != std::string::npos) trial.key_retrieved = true;
        }
        ASSIGN_OR_RETURN(model::Sampler sampler, model::Sampler::Create(model::SamplerOptions::Greedy()));
        retriever::GenerateOptions go;
        go.max_tokens = 8;
        ASSIGN_OR_RETURN(retriever::GenerateResult r, session.Generate(go, sampler));
        trial.answer = r.text;
        trial.pass = r.text.find(p.key) != std::string::npos;
        if (on_trial) on_trial(trial);
        out.push_back(std::move(trial));
      }
    }
  }
  return out;
}

namespace {

double MeanNll(const std::vector<float>& logprobs, size_t first) {
  double s = 0.0;
  for (size_t i = first; i < logprobs.size(); ++i) s -= logprobs[i];
  return s / static_cast<double>(logprobs.size() - first);
}

}  // namespace

StatusOr<PerplexityResult> RunPerplexity(retriever::LongContextSession& memory_session,
                                         retriever::LongContextSession& plain_session,
                                         std::string_view text, const PerplexityOptions& options,
                                         const std::function<void(int64_t, int64_t)>& progress) {
  RETURN_IF_ERROR(options.Validate());
  const model::Tokenizer& tok = *memory_session.tokenizer();
  const std::vector<model::TokenId> ids = tok.Encode(text, false, false);
  int64_t n_windows = static_cast<int64_t>(ids.size()) / options.seq_len;
  if (options.max_windows > 0) n_windows = std::min(n_windows, options.max_windows);
  if (n_windows < 1) {
    return InvalidArgumentError("the text has " + std::to_string(ids.size()) +
                                " tokens, fewer than one evaluation window of " +
                                std::to_string(options.seq_len));
  }
  const bool full = options.full_attention &&
                    plain_session.options().local_window >= options.seq_len;
  PerplexityResult r;
  double nll_mem = 0, nll_slide = 0, nll_full = 0;
  for (int64_t w = 0; w < n_windows; ++w) {
    const auto win = std::span<const model::TokenId>(ids).subspan(
        static_cast<size_t>(w * options.seq_len), static_cast<size_t>(options.seq_len));
    const int64_t prefix = options.seq_len - options.scored_tokens;
    const auto scored = win.subspan(static_cast<size_t>(prefix));
    // Memory: the prefix goes into the (persistent) bank in τ-token windows, then the scored tail
    // runs as one window retrieving from everything before it.
    if (prefix > 0) {
      RETURN_IF_ERROR(memory_session.IngestTokens(1, win.subspan(0, static_cast<size_t>(prefix)),
                                                  w * options.seq_len).status());
    }
    memory::SearchFilter filter;
    filter.doc_ids = {1};
    filter.before_position = w * options.seq_len + prefix;
    const std::string query = tok.Decode(scored, true);
    ASSIGN_OR_RETURN(auto lp_mem, memory_session.TokenLogProbs(scored, query, filter));
    ASSIGN_OR_RETURN(auto lp_slide, plain_session.TokenLogProbs(scored, query));
    nll_mem += MeanNll(lp_mem, 0);
    nll_slide += MeanNll(lp_slide, 0);
    if (full) {
      ASSIGN_OR_RETURN(auto lp_full, plain_session.TokenLogProbs(win, query));
      // Score the same tokens: positions prefix+1 .. seq_len-1 of the window.
      nll_full += MeanNll(lp_full, static_cast<size_t>(prefix));
    }
    // Afterwards the scored tail joins memory too, as MemLong's eval writes every window.
    RETURN_IF_ERROR(memory_session.IngestTokens(1, scored, w * options.seq_len + prefix).status());
    if (progress) progress(w + 1, n_windows);
  }
  r.windows = n_windows;
  r.scored_tokens = options.scored_tokens - 1;
  r.ppl_memory = std::exp(nll_mem / static_cast<double>(n_windows));
  r.ppl_sliding = std::exp(nll_slide / static_cast<double>(n_windows));
  r.ppl_full = full ? std::exp(nll_full / static_cast<double>(n_windows)) : 0.0;
  return r;
}

nlohmann::json ToJson(const PasskeyTrial& t) {
  return {{"requested_length", t.requested_length}, {"length", t.length}, {"depth", t.depth}, {"key", t.key}, {"answer", t.answer},
          {"pass", t.pass}, {"key_in_window", t.key_in_window},
          {"retrieved_chunks", t.retrieved_chunks}, {"key_retrieved", t.key_retrieved}};
}

nlohmann::json ToJson(const PerplexityResult& r) {
  nlohmann::json j = {{"windows", r.windows}, {"scored_tokens_per_window", r.scored_tokens},
                      {"ppl_memory", r.ppl_memory}, {"ppl_sliding_window", r.ppl_sliding}};
  if (r.ppl_full > 0) j["ppl_full_attention"] = r.ppl_full;
  return j;
}

}  // namespace muninn::tools
