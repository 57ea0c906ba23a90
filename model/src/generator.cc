#include "muninn/model/generator.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>
#include <string>

namespace muninn::model {

const char* StopReasonName(StopReason reason) {
  switch (reason) {
    case StopReason::kEog: return "eog";
    case StopReason::kStopString: return "stop_string";
    case StopReason::kMaxTokens: return "max_tokens";
    case StopReason::kContextFull: return "context_full";
    case StopReason::kCallback: return "callback";
  }
  return "unknown";
}

Status GenerateOptions::Validate() const {
  if (max_tokens < 0) {
    return InvalidArgumentError("max tokens must be >= 0, got " + std::to_string(max_tokens));
  }
  for (const std::string& s : stop) {
    if (s.empty()) return InvalidArgumentError("stop strings must not be empty");
  }
  RETURN_IF_ERROR(recurrence.Validate());
  return sampler.Validate();
}

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Holds back streamed text that might be the beginning of a stop string.
class StopMatcher {
 public:
  explicit StopMatcher(const std::vector<std::string>& stops) : stops_(stops) {}

  // Adds `piece`; returns the text that is now safe to emit. Sets *stopped when a stop string
  // appeared (the returned text then ends right before it and the rest is dropped).
  std::string Push(std::string_view piece, bool* stopped) {
    held_.append(piece);
    size_t first = std::string::npos;
    for (const std::string& s : stops_) first = std::min(first, held_.find(s));
    if (first != std::string::npos) {
      *stopped = true;
      std::string out = held_.substr(0, first);
      held_.clear();
      return out;
    }
    // The longest suffix of held_ that is a proper prefix of some stop string stays back.
    size_t keep = 0;
    for (const std::string& s : stops_) {
      for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n) {
        if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
          keep = n;
          break;
        }
      }
    }
    std::string out = held_.substr(0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return out;
  }
  // Whatever is held back (the generation ended without completing a stop string).
  std::string Flush() {
    std::string out;
    out.swap(held_);
    return out;
  }

 private:
  const std::vector<std::string>& stops_;
  std::string held_;
};

// Runs forwards with the recurrence options: steps, s₀, adaptive exit, warm start. Plain models
// get the default ForwardOptions (their path is unchanged).
class RecurrentStepper {
 public:
  RecurrentStepper(Model& model, const RecurrenceOptions& o)
      : model_(model), o_(o), rng_(o.seed), exit_(o.exit) {}

  StatusOr<ForwardResult> Forward(std::span<const TokenId> ids, KvCache* cache, bool prefill,
                                  int32_t steps = 0, bool all_logits = false) {
    ForwardOptions fo;
    fo.all_logits = all_logits;
    if (!model_.is_recurrent()) return model_.Forward(ids, cache, fo);
    fo.steps = steps > 0 ? steps : o_.steps;
    const int64_t T = static_cast<int64_t>(ids.size());
    if (!prefill && T == 1 && warm_.defined()) {
      fo.init_state = warm_;
    } else if (model_.weights().adapter.defined()) {
      ASSIGN_OR_RETURN(fo.init_state,
                       MakeInitialState(o_.init, T, model_.config().n_embd,
                                        model_.config().embd_scale, &rng_));
    }
    if (o_.exit.enabled() && steps == 0 && !(prefill && o_.exit.no_exit_in_prefill)) {
      exit_.Reset();
      fo.step_logits = o_.exit.needs_logits();
      fo.on_step = [this](const StepView& v) -> StatusOr<bool> {
        return exit_.Update(v.step, v.state, v.logits);
      };
    }
    ASSIGN_OR_RETURN(ForwardResult r, model_.Forward(ids, cache, fo));
    if (o_.warm_start != WarmStart::kOff && model_.weights().adapter.defined()) {
      const Tensor& src = o_.warm_start == WarmStart::kNormed ? r.latent : r.state;
      ASSIGN_OR_RETURN(Tensor last, src.Slice(0, T - 1, T));
      ASSIGN_OR_RETURN(warm_, last.Contiguous());
    }
    return r;
  }

 private:
  Model& model_;
  RecurrenceOptions o_;
  std::mt19937_64 rng_;
  ExitCriterion exit_;
  Tensor warm_;  // [1, n_embd] the previous token's final state
};

// The per-token bookkeeping of the generation loop: callbacks, eog, streaming and stop strings.
class TokenSink {
 public:
  TokenSink(const GenerateOptions& options, const Tokenizer* tokenizer, GenerateResult* result)
      : options_(options), tokenizer_(tokenizer), result_(result), matcher_(options.stop) {
    if (tokenizer != nullptr) detok_ = std::make_unique<IncrementalDetokenizer>(*tokenizer);
  }
  // Records `next`; true when the generation must end here (stop_reason set).
  bool Push(TokenId next) {
    result_->tokens.push_back(next);
    if (options_.on_token && !options_.on_token(next)) {
      result_->stop_reason = StopReason::kCallback;
      return true;
    }
    if (options_.stop_at_eog && tokenizer_ != nullptr && tokenizer_->IsEog(next)) {
      result_->stop_reason = StopReason::kEog;
      return true;
    }
    if (detok_) {
      Emit(matcher_.Push(detok_->Push(next), &stopped_));
      if (stopped_) {
        result_->stop_reason = StopReason::kStopString;
        return true;
      }
    }
    return false;
  }
  void Finish() {
    if (detok_ && !stopped_) {
      Emit(matcher_.Push(detok_->Flush(), &stopped_));
      if (stopped_) {
        result_->stop_reason = StopReason::kStopString;
      } else {
        Emit(matcher_.Flush());
      }
    }
  }

 private:
  void Emit(const std::string& text) {
    if (text.empty()) return;
    result_->text += text;
    if (options_.on_text) options_.on_text(text);
  }
  const GenerateOptions& options_;
  const Tokenizer* tokenizer_;
  GenerateResult* result_;
  std::unique_ptr<IncrementalDetokenizer> detok_;
  StopMatcher matcher_;
  bool stopped_ = false;
};

TokenId Argmax(const float* row, size_t n) {
  return static_cast<TokenId>(std::max_element(row, row + n) - row);
}

// Draft/verify rounds (recurrence.h). The cache holds every emitted token but the last one when
// it returns, as in the plain loop.
Status SpeculativeLoop(Model& model, KvCache& cache, RecurrentStepper& stepper, Sampler& sampler,
                       const GenerateOptions& options, ForwardResult first, TokenSink& sink,
                       GenerateResult& result) {
  const RecurrenceOptions& ro = options.recurrence;
  const size_t n_vocab = static_cast<size_t>(model.config().n_vocab);
  const int32_t verify_steps = ro.steps > 0 ? ro.steps : model.default_steps();
  TokenId last = sampler.Sample(std::span<const float>(first.logits.data_as<float>(), n_vocab),
                                cache.tokens());
  if (sink.Push(last) || options.max_tokens <= 1) return Status::Ok();
  std::vector<TokenId> drafts;
  while (true) {
    const int64_t room = cache.n_free();
    const int64_t left = options.max_tokens - static_cast<int64_t>(result.tokens.size());
    if (room == 0) {
      result.stop_reason = StopReason::kContextFull;
      return Status::Ok();
    }
    const int64_t L = std::min<int64_t>({ro.lookahead, room, left});
    // Draft L tokens greedily with fewer iterations.
    drafts.clear();
    TokenId cur = last;
    for (int64_t i = 0; i < L; ++i) {
      const TokenId one[] = {cur};
      ASSIGN_OR_RETURN(ForwardResult d, stepper.Forward(one, &cache, false, ro.draft_steps));
      cur = Argmax(d.logits.data_as<float>(), n_vocab);
      drafts.push_back(cur);
      result.decode_core_steps += d.steps;
      ++result.decode_forwards;
    }
    RETURN_IF_ERROR(cache.Rollback(L));
    // Verify [last, d_0 .. d_{L-2}] in one forward at the full r: row i predicts d_i.
    std::vector<TokenId> in;
    in.push_back(last);
    in.insert(in.end(), drafts.begin(), drafts.end() - 1);
    ASSIGN_OR_RETURN(ForwardResult v, stepper.Forward(in, &cache, false, verify_steps, true));
    result.decode_core_steps += v.steps;
    ++result.decode_forwards;
    ++result.n_rounds;
    result.n_drafted += L;
    int64_t k = 0;
    while (k < L && Argmax(v.logits.data_as<float>() + k * n_vocab, n_vocab) == drafts[k]) ++k;
    result.n_accepted += k;
    // Emit the accepted drafts, then (on a mismatch) the verifier's own token for row k.
    std::vector<TokenId> out(drafts.begin(), drafts.begin() + k);
    if (k < L) {
      // The context the sampler sees: the cache's tokens up to the row being replaced.
      std::vector<TokenId> ctx(cache.tokens().begin(), cache.tokens().end() - (L - 1 - k));
      out.push_back(sampler.Sample(
          std::span<const float>(v.logits.data_as<float>() + k * n_vocab, n_vocab), ctx));
    }
    // The cache holds [last, d_0..d_{L-2}]; keep what the emitted tokens (but the last) need.
    RETURN_IF_ERROR(cache.Rollback(L - static_cast<int64_t>(out.size())));
    for (size_t i = 0; i < out.size(); ++i) {
      const bool stop = sink.Push(out[i]);
      const bool full = static_cast<int64_t>(result.tokens.size()) >= options.max_tokens;
      if (stop || full) {
        // Drop the cache rows of tokens after the one we stop at.
        RETURN_IF_ERROR(cache.Rollback(static_cast<int64_t>(out.size() - 1 - i)));
        if (!stop) result.stop_reason = StopReason::kMaxTokens;
        return Status::Ok();
      }
    }
    last = out.back();
  }
}

}  // namespace

StatusOr<GenerateResult> Generate(Model& model, KvCache& cache, const Tokenizer* tokenizer,
                                  std::span<const TokenId> prompt, const GenerateOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  if (prompt.empty()) return InvalidArgumentError("Generate needs a non-empty prompt");
  if (tokenizer == nullptr && !options.stop.empty()) {
    return InvalidArgumentError("stop strings need a tokenizer to turn tokens into text");
  }
  if (static_cast<int64_t>(prompt.size()) > cache.n_free()) {
    return ResourceExhaustedError(
        "the prompt has " + std::to_string(prompt.size()) + " tokens but the context has room for " +
        std::to_string(cache.n_free()) + " (n_ctx " + std::to_string(cache.n_ctx()) +
        "); shorten the prompt, raise the context size, or use a long-context session");
  }
  ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(options.sampler));

  GenerateResult result;
  result.n_prompt = static_cast<int64_t>(prompt.size());
  RecurrentStepper stepper(model, options.recurrence);
  const auto t0 = Clock::now();
  ASSIGN_OR_RETURN(ForwardResult fwd, stepper.Forward(prompt, &cache, /*prefill=*/true));
  const auto t1 = Clock::now();
  result.prefill_seconds = Seconds(t1 - t0);
  result.prefill_steps = fwd.steps;

  TokenSink sink(options, tokenizer, &result);
  result.stop_reason = StopReason::kMaxTokens;
  if (options.recurrence.draft_steps > 0 && model.is_recurrent() && options.max_tokens > 0) {
    RETURN_IF_ERROR(SpeculativeLoop(model, cache, stepper, sampler, options, std::move(fwd), sink,
                                    result));
    sink.Finish();
    result.decode_seconds = Seconds(Clock::now() - t1);
    return result;
  }
  const size_t n_vocab = static_cast<size_t>(model.config().n_vocab);
  for (int32_t i = 0; i < options.max_tokens; ++i) {
    const TokenId next = sampler.Sample(
        std::span<const float>(fwd.logits.data_as<float>(), n_vocab), cache.tokens());
    if (sink.Push(next)) break;
    if (i + 1 == options.max_tokens) break;
    if (cache.n_free() == 0) {
      result.stop_reason = StopReason::kContextFull;
      break;
    }
    const TokenId one[] = {next};
    ASSIGN_OR_RETURN(fwd, stepper.Forward(one, &cache, /*prefill=*/false));
    result.decode_core_steps += fwd.steps;
    ++result.decode_forwards;
  }
  sink.Finish();
  result.decode_seconds = Seconds(Clock::now() - t1);
  return result;
}

}  // namespace muninn::model
