#include "muninn/tools/evals.h"

#include <algorithm>
#include <cmath>

#include "chat_generation.h"

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
  if (fillers.empty()) return InvalidArgumentError("passkey needs at least one filler text");
  return Status::Ok();
}

Status PerplexityOptions::Validate() const {
  if (scored_tokens < 2) return InvalidArgumentError("scored_tokens must be >= 2");
  if (seq_len < scored_tokens) return InvalidArgumentError("seq_len must be >= scored_tokens");
  if (max_windows < 0) return InvalidArgumentError("max_windows must be >= 0");
  if (query_tokens < 1) return InvalidArgumentError("query_tokens must be >= 1");
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

FillerText RepeatFiller() { return FillerText{"repeat", ""}; }

StatusOr<std::string> HaystackText(const model::Tokenizer& tok, const FillerText& filler,
                                   int64_t n_tokens, uint64_t seed) {
  if (n_tokens <= 0) return std::string();
  std::string base = filler.text;
  if (base.empty()) base = kFiller;
  // Start at a seed-chosen line of prose (the repeat filler has one line: it starts at 0).
  uint64_t s = seed;
  size_t start = 0;
  if (!filler.text.empty()) {
    start = static_cast<size_t>(SplitMix(s) % base.size());
    const size_t nl = base.find('\n', start);
    start = nl == std::string::npos ? 0 : nl + 1;
  }
  // Take a stretch long enough for n_tokens (wrapping around the text), then cut at n_tokens.
  size_t chars = static_cast<size_t>(n_tokens) * 6 + 64;
  for (int attempt = 0; attempt < 8; ++attempt, chars *= 2) {
    std::string stretch;
    stretch.reserve(chars);
    size_t at = start;
    while (stretch.size() < chars) {
      const size_t take = std::min(chars - stretch.size(), base.size() - at);
      stretch.append(base, at, take);
      at = (at + take) % base.size();
    }
    const std::vector<model::TokenId> ids = tok.Encode(stretch, false, false);
    if (static_cast<int64_t>(ids.size()) >= n_tokens) {
      return tok.Decode(std::span<const model::TokenId>(ids).subspan(0, static_cast<size_t>(n_tokens)));
    }
  }
  return InvalidArgumentError("filler '" + filler.name + "' does not tokenize to " +
                              std::to_string(n_tokens) + " tokens");
}

std::string InsertAtDepth(const std::string& hay, const std::string& sentence, double depth) {
  const size_t target = static_cast<size_t>(std::llround(std::clamp(depth, 0.0, 1.0) *
                                                         static_cast<double>(hay.size())));
  if (target == 0) return sentence + hay;
  if (target >= hay.size()) return hay + sentence;
  // The nearest boundary: a line break in prose, a sentence end in the repeat filler.
  size_t best = std::string::npos;
  for (const char* sep : {"\n", ". "}) {
    const size_t after = hay.find(sep, target);
    const size_t before = target > 0 ? hay.rfind(sep, target) : std::string::npos;
    for (size_t c : {after, before}) {
      if (c == std::string::npos) continue;
      const size_t at = c + std::char_traits<char>::length(sep);
      if (best == std::string::npos ||
          (at > target ? at - target : target - at) < (best > target ? best - target : target - best)) {
        best = at;
      }
    }
    if (best != std::string::npos) break;
  }
  if (best == std::string::npos || best > hay.size()) best = target;
  return hay.substr(0, best) + sentence + hay.substr(best);
}

StatusOr<PasskeyPrompt> BuildPasskeyPrompt(const model::Tokenizer& tok, int64_t length,
                                           double depth, int64_t local_tokens, uint64_t seed,
                                           const FillerText& filler) {
  uint64_t s = seed;
  const uint64_t key_num = 10000 + SplitMix(s) % 90000;
  PasskeyPrompt p;
  p.key = std::to_string(key_num);
  const std::string needle = "The pass key is " + p.key + ". Remember it. " + p.key + " is the pass key. ";
  const int64_t fixed = static_cast<int64_t>(
      tok.Encode(std::string(kIntro) + needle + kQuestion, false, false).size());
  // The haystack depends on the length only (not on the key's seed): trials differ in the key and
  // its depth, and chunks before the key repeat across trials (an embedding cache reuses them).
  ASSIGN_OR_RETURN(std::string hay, HaystackText(tok, filler, std::max<int64_t>(1, length - fixed),
                                                 static_cast<uint64_t>(length) * 1000003u));
  // Prose gets the needle on a line of its own.
  const std::string text = std::string(kIntro) +
                           InsertAtDepth(hay, filler.text.empty() ? needle : "\n" + needle + "\n", depth) +
                           kQuestion;
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
  const bool reread = session.options().has(retriever::kModeReread);
  for (const FillerText& filler : options.fillers) {
  for (int64_t length : options.lengths) {
    for (double depth : options.depths) {
      for (int64_t t = 0; t < options.trials; ++t) {
        ASSIGN_OR_RETURN(PasskeyPrompt p, BuildPasskeyPrompt(tok, length, depth, options.local_tokens,
                                                             seed++, filler));
        if (reset_bank) RETURN_IF_ERROR(reset_bank());
        PasskeyTrial trial;
        trial.filler = filler.name;
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
        std::vector<retriever::Excerpt> retrieved, excerpts;
        const std::string window_text = tok.Decode(window);
        if (reread && !prefix.empty()) {
          ASSIGN_OR_RETURN(retrieved, session.RetrieveExcerpts(query));
          // Focused on the question line, placed as a completion places them (RunCompletion).
          ASSIGN_OR_RETURN(excerpts, session.FocusExcerpts(LastLine(window_text), retrieved));
        }
        std::vector<model::TokenId> prompt = window;
        while (!excerpts.empty()) {
          // The weakest excerpt goes when they do not fit beside the window.
          prompt = tok.Encode(CompletionWithExcerpts(window_text, excerpts,
                                                     session.options().reread.placement),
                              false, false);
          if (static_cast<int64_t>(prompt.size()) + 16 <= session.options().local_window) break;
          DropWeakestExcerpt(&excerpts);
          prompt = window;
        }
        RETURN_IF_ERROR(session.Begin(prompt, query));
        const std::vector<memory::SearchHit> read = HitsWithin(retrieved, excerpts);
        trial.retrieved_chunks = static_cast<int64_t>(session.retrieved().hits.size() + read.size());
        for (const auto& e : retrieved) {
          const bool kept = std::any_of(read.begin(), read.end(),
                                        [&](const memory::SearchHit& h) { return h.id == e.hit.id; });
          if (kept && e.text.find(p.key) != std::string::npos) trial.key_retrieved = true;
        }
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
    const bool ingest = memory_session.options().use_memory && memory_session.bank() != nullptr;
    if (prefix > 0 && ingest) {
      RETURN_IF_ERROR(memory_session.IngestTokens(1, win.subspan(0, static_cast<size_t>(prefix)),
                                                  w * options.seq_len).status());
    }
    memory::SearchFilter filter;
    filter.doc_ids = {1};
    filter.before_position = w * options.seq_len + prefix;
    // The query is what precedes the scored tokens (never the scored text itself).
    const int64_t q_end = w * options.seq_len + prefix;
    const int64_t q_begin = std::max<int64_t>(0, q_end - options.query_tokens);
    const std::string query = tok.Decode(std::span<const model::TokenId>(ids).subspan(
                                             static_cast<size_t>(q_begin),
                                             static_cast<size_t>(q_end - q_begin)),
                                         true);
    std::vector<model::TokenId> context;
    if (memory_session.options().has(retriever::kModeReread) && q_end > q_begin) {
      ASSIGN_OR_RETURN(auto excerpts, memory_session.RetrieveExcerpts(query, filter));
      const int64_t room = memory_session.options().local_window - options.scored_tokens;
      for (const auto& e : excerpts) {
        if (static_cast<int64_t>(context.size() + e.tokens.size()) > room) continue;
        context.insert(context.end(), e.tokens.begin(), e.tokens.end());
      }
    }
    ASSIGN_OR_RETURN(auto lp_mem, memory_session.TokenLogProbs(scored, query, filter, context));
    ASSIGN_OR_RETURN(auto lp_slide, plain_session.TokenLogProbs(scored, query));
    nll_mem += MeanNll(lp_mem, 0);
    nll_slide += MeanNll(lp_slide, 0);
    if (options.keep_logprobs) {
      r.logprobs_memory.push_back(lp_mem);
      r.logprobs_sliding.push_back(lp_slide);
    }
    if (full) {
      ASSIGN_OR_RETURN(auto lp_full, plain_session.TokenLogProbs(win, query));
      // Score the same tokens: positions prefix+1 .. seq_len-1 of the window.
      nll_full += MeanNll(lp_full, static_cast<size_t>(prefix));
    }
    // Afterwards the scored tail joins memory too, as MemLong's eval writes every window.
    if (ingest) {
      RETURN_IF_ERROR(memory_session.IngestTokens(1, scored, w * options.seq_len + prefix).status());
    }
    if (progress) progress(w + 1, n_windows);
  }
  r.modes = memory_session.options().use_memory
                ? retriever::MemoryModesName(memory_session.options().modes)
                : std::string("none");
  r.windows = n_windows;
  r.scored_tokens = options.scored_tokens - 1;
  r.ppl_memory = std::exp(nll_mem / static_cast<double>(n_windows));
  r.ppl_sliding = std::exp(nll_slide / static_cast<double>(n_windows));
  r.ppl_full = full ? std::exp(nll_full / static_cast<double>(n_windows)) : 0.0;
  return r;
}

nlohmann::json ToJson(const PasskeyTrial& t) {
  return {{"filler", t.filler}, {"requested_length", t.requested_length}, {"length", t.length}, {"depth", t.depth}, {"key", t.key}, {"answer", t.answer},
          {"pass", t.pass}, {"key_in_window", t.key_in_window},
          {"retrieved_chunks", t.retrieved_chunks}, {"key_retrieved", t.key_retrieved}};
}

nlohmann::json ToJson(const PerplexityResult& r) {
  nlohmann::json j = {{"modes", r.modes}, {"windows", r.windows}, {"scored_tokens_per_window", r.scored_tokens},
                      {"ppl_memory", r.ppl_memory}, {"ppl_sliding_window", r.ppl_sliding}};
  if (r.ppl_full > 0) j["ppl_full_attention"] = r.ppl_full;
  return j;
}

}  // namespace muninn::tools
