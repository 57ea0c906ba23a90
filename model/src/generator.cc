#include "muninn/model/generator.h"

#include <algorithm>
#include <chrono>
#include <memory>
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
  const auto t0 = Clock::now();
  ASSIGN_OR_RETURN(ForwardResult fwd, model.Forward(prompt, &cache));
  const auto t1 = Clock::now();
  result.prefill_seconds = Seconds(t1 - t0);

  std::unique_ptr<IncrementalDetokenizer> detok;
  if (tokenizer != nullptr) detok = std::make_unique<IncrementalDetokenizer>(*tokenizer);
  StopMatcher matcher(options.stop);
  auto emit = [&](const std::string& text) {
    if (text.empty()) return;
    result.text += text;
    if (options.on_text) options.on_text(text);
  };

  const size_t n_vocab = static_cast<size_t>(model.config().n_vocab);
  bool stopped = false;
  result.stop_reason = StopReason::kMaxTokens;
  for (int32_t i = 0; i < options.max_tokens; ++i) {
    const TokenId next = sampler.Sample(
        std::span<const float>(fwd.logits.data_as<float>(), n_vocab), cache.tokens());
    result.tokens.push_back(next);
    if (options.on_token && !options.on_token(next)) {
      result.stop_reason = StopReason::kCallback;
      break;
    }
    if (options.stop_at_eog && tokenizer != nullptr && tokenizer->IsEog(next)) {
      result.stop_reason = StopReason::kEog;
      break;
    }
    if (detok) {
      emit(matcher.Push(detok->Push(next), &stopped));
      if (stopped) {
        result.stop_reason = StopReason::kStopString;
        break;
      }
    }
    if (i + 1 == options.max_tokens) break;
    if (cache.n_free() == 0) {
      result.stop_reason = StopReason::kContextFull;
      break;
    }
    const TokenId one[] = {next};
    ASSIGN_OR_RETURN(fwd, model.Forward(one, &cache));
  }
  if (detok && !stopped) {
    emit(matcher.Push(detok->Flush(), &stopped));
    if (stopped) {
      result.stop_reason = StopReason::kStopString;
    } else {
      emit(matcher.Flush());
    }
  }
  result.decode_seconds = Seconds(Clock::now() - t1);
  return result;
}

}  // namespace muninn::model
