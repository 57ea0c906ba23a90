// `muninn generate` (streamed text generation) and `muninn logits` (last-position top-K logits).
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "command_registry.h"
#include "device_backend.h"
#include "llm_cli.h"
#include "lora_spec.h"
#include "muninn/model/chat_template.h"
#include "muninn/model/generator.h"

namespace muninn::tools {
namespace {

// --lora PATH[:SCALE]: a PEFT LoRA folder merged into the weights at load (lora_merge.h).
LoraSpec LoraOf(const std::string& flag) {
  return flag.empty() ? LoraSpec{} : ParseLoraSpec(flag);
}

struct GenerateFlags {
  std::string lora;
  std::string model;
  std::string prompt;
  std::string system;
  int32_t n_predict = 128;
  float temp = 0.8f;
  int32_t top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.05f;
  float repeat_penalty = 1.0f;
  int32_t repeat_last_n = 64;
  int64_t seed = -1;  // -1: a fresh seed, printed so the run can be repeated
  int64_t ctx = 0;    // 0: min(trained context, 4096)
  std::vector<std::string> stop;
  bool chat = false;
  bool ignore_eos = false;
  bool exact = false;
  int threads = 0;
  std::string device = "cpu";
  int gpu_layers = -1;
  // recurrent-depth models (Huginn)
  int32_t steps = 0;
  std::string init = "random";
  std::string exit = "none";
  double exit_threshold = -1.0;
  int32_t exit_min_steps = 0;
  int32_t exit_every = 1;
  bool exit_not_in_prefill = false;
  std::string kv_share = "full";
  std::string warm_start;  // "": normed, or off with --draft-steps
  int32_t draft_steps = 0;
  int32_t lookahead = 8;
};

// Fills the recurrence options from the flags (InvalidArgument naming a bad value).
Status ParseRecurrence(const GenerateFlags& f, model::RecurrenceOptions* ro) {
  ro->steps = f.steps;
  RETURN_IF_ERROR(model::RecurrenceOptions::ParseInit(f.init, &ro->init));
  RETURN_IF_ERROR(model::ExitOptions::ParseKind(f.exit, &ro->exit.kind));
  ro->exit.threshold = f.exit_threshold;
  ro->exit.min_steps = f.exit_min_steps;
  ro->exit.check_every = f.exit_every;
  ro->exit.no_exit_in_prefill = f.exit_not_in_prefill;
  const std::string warm = !f.warm_start.empty() ? f.warm_start
                                                 : (f.draft_steps > 0 ? "off" : "normed");
  RETURN_IF_ERROR(model::RecurrenceOptions::ParseWarmStart(warm, &ro->warm_start));
  ro->draft_steps = f.draft_steps;
  ro->lookahead = f.lookahead;
  return ro->Validate();
}

constexpr const char* kLoraHelp =
    "PEFT LoRA folder merged into the weights at load, optionally :SCALE (default 1); adapted "
    "matrices run in f32";
constexpr const char* kExactHelp =
    "Exact MatMul: keep activations f32 and dequantize weight rows to f32 (slower; matches "
    "frameworks that run on dequantized weights, e.g. for identical greedy output)";

int Fail(const char* cmd, const Status& s) {
  std::fprintf(stderr, "muninn %s: %s\n", cmd, s.ToString().c_str());
  return 1;
}

// The prompt ids: rendered through the checkpoint's chat template with --chat, plain otherwise.
// Special-token text (<|im_start|>) in the prompt is parsed as the special token either way.
StatusOr<std::vector<model::TokenId>> PromptIds(const model::LoadedModel& lm,
                                                const std::string& prompt, bool chat,
                                                const std::string& system) {
  const model::Tokenizer& tok = *lm.tokenizer;
  if (!chat) return tok.Encode(prompt, /*add_special=*/true, /*parse_special=*/true);
  auto tmpl = model::ChatTemplate::FromJinja(lm.chat_template);
  if (!tmpl.ok()) {
    std::fprintf(stderr, "muninn generate: %s; using the plain 'role: content' format\n",
                 tmpl.status().ToString().c_str());
    tmpl = model::ChatTemplate::Plain();
  }
  std::vector<model::ChatMessage> messages;
  if (!system.empty()) messages.push_back({"system", system});
  messages.push_back({"user", prompt});
  ASSIGN_OR_RETURN(std::string text, tmpl->Render(messages, /*add_generation_prompt=*/true));
  return tok.Encode(text, /*add_special=*/false, /*parse_special=*/true);
}

int RunGenerate(const GenerateFlags& f) {
  auto cm = OpenCliModel(f.model, f.threads, /*load_tokenizer=*/true, f.exact, f.device,
                         LoraOf(f.lora), f.gpu_layers);
  if (!cm.ok()) return Fail("generate", cm.status());
  model::LoadedModel& lm = (*cm)->loaded;
  auto ids = PromptIds(lm, f.prompt, f.chat, f.system);
  if (!ids.ok()) return Fail("generate", ids.status());

  model::GenerateOptions go;
  if (Status st = ParseRecurrence(f, &go.recurrence); !st.ok()) return Fail("generate", st);
  const bool recurrent = lm.model->is_recurrent();
  model::KvCacheOptions co;
  const int64_t trained = lm.model->config().n_ctx_train;
  co.n_ctx = f.ctx > 0 ? f.ctx : (trained > 0 ? std::min<int64_t>(trained, 4096) : 4096);
  if (f.exact) co.dtype = DType::kF32;  // f16 K/V would move logits by ~1e-2 again
  if (recurrent) {
    co.max_steps = f.steps > 0 ? f.steps : lm.model->default_steps();
    if (Status st = model::KvSlotLayout::ParseShare(f.kv_share, &co.share, &co.share_k);
        !st.ok()) {
      return Fail("generate", st);
    }
  }
  if (recurrent && co.share == model::KvShare::kFull) {
    const double gib = static_cast<double>(lm.model->SlotLayoutFor(co).n_slots()) *
                       static_cast<double>(co.n_ctx) * lm.model->config().n_head_kv *
                       lm.model->config().head_dim * 2.0 *
                       (co.dtype == DType::kF32 ? 4.0 : 2.0) / (1024.0 * 1024.0 * 1024.0);
    if (gib > 4.0) {
      std::fprintf(stderr,
                   "muninn generate: the full KV layout needs %.1f GiB for %lld positions at r = "
                   "%d; --kv-share s4 or a smaller --ctx reduce it\n",
                   gib, static_cast<long long>(co.n_ctx), co.max_steps);
    }
  }
  auto cache = lm.model->NewKvCache(co);
  if (!cache.ok()) return Fail("generate", cache.status());

  go.max_tokens = f.n_predict;
  go.sampler.temperature = f.temp;
  go.sampler.top_k = f.top_k;
  go.sampler.top_p = f.top_p;
  go.sampler.min_p = f.min_p;
  go.sampler.repeat_penalty = f.repeat_penalty;
  go.sampler.repeat_last_n = f.repeat_last_n;
  go.sampler.seed = f.seed >= 0 ? static_cast<uint64_t>(f.seed) : std::random_device{}();
  go.recurrence.seed = go.sampler.seed;
  go.stop = f.stop;
  go.stop_at_eog = !f.ignore_eos;
  go.on_text = [](std::string_view s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  };
  auto res = model::Generate(*lm.model, **cache, lm.tokenizer.get(), *ids, go);
  std::printf("\n");
  std::fflush(stdout);  // the stats line on stderr comes after the text
  if (!res.ok()) return Fail("generate", res.status());
  const double pp = res->prefill_seconds > 0 ? res->n_prompt / res->prefill_seconds : 0.0;
  const double tg = res->decode_seconds > 0 ? res->tokens.size() / res->decode_seconds : 0.0;
  std::fprintf(stderr,
               "[%lld prompt tokens, %.1f t/s | %zu generated, %.1f t/s | stop: %s | seed %llu]\n",
               static_cast<long long>(res->n_prompt), pp, res->tokens.size(), tg,
               model::StopReasonName(res->stop_reason),
               static_cast<unsigned long long>(go.sampler.seed));
  if (recurrent) {
    std::fprintf(stderr,
                 "[recurrent core: r %d, prefill %d steps, mean %.2f steps/decode forward | KV %s, "
                 "%.1f KiB/token",
                 go.recurrence.steps > 0 ? go.recurrence.steps : lm.model->default_steps(),
                 res->prefill_steps, res->mean_steps(),
                 (*cache)->slot_layout().ToString().c_str(),
                 static_cast<double>((*cache)->bytes_per_token()) / 1024.0);
    if (res->n_rounds > 0) {
      std::fprintf(stderr, " | speculative: %lld/%lld drafts accepted in %lld rounds",
                   static_cast<long long>(res->n_accepted), static_cast<long long>(res->n_drafted),
                   static_cast<long long>(res->n_rounds));
    }
    std::fprintf(stderr, "]\n");
  }
  if (res->stop_reason == model::StopReason::kContextFull) {
    std::fprintf(stderr,
                 "muninn generate: the context (%lld tokens) is full; raise --ctx or use "
                 "`muninn ask`/`summarize` for long inputs\n",
                 static_cast<long long>(co.n_ctx));
    return 2;
  }
  return 0;
}

struct LogitsFlags {
  std::string lora;
  std::string model;
  std::string prompt;
  std::string ids;
  int32_t top = 10;
  bool json = false;
  bool exact = false;
  int threads = 0;
  std::string device = "cpu";
  int gpu_layers = -1;
  int32_t steps = 0;               // recurrent models: core iterations (0 = the model's default)
  std::string init = "random";     // recurrent models: initial state (seeded: reproducible)
  int64_t seed = 0;                // for --init random
};

StatusOr<std::vector<model::TokenId>> ParseIds(const std::string& text) {
  std::vector<model::TokenId> ids;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find(',', i);
    if (j == std::string::npos) j = text.size();
    const std::string item = text.substr(i, j - i);
    long long v = -1;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    const bool ok = !item.empty() && ec == std::errc() && end == item.data() + item.size();
    if (!ok || v < 0 || v > INT32_MAX) {
      return InvalidArgumentError("--ids must be comma-separated non-negative token ids, got '" +
                                  item + "'");
    }
    ids.push_back(static_cast<model::TokenId>(v));
    i = j + 1;
  }
  if (ids.empty()) return InvalidArgumentError("--ids is empty");
  return ids;
}

int RunLogits(const LogitsFlags& f) {
  if (f.prompt.empty() == f.ids.empty()) {
    return Fail("logits", InvalidArgumentError("give exactly one of -p PROMPT and --ids 1,2,3"));
  }
  if (f.top <= 0) return Fail("logits", InvalidArgumentError("--top must be positive"));
  std::vector<model::TokenId> ids;
  if (!f.ids.empty()) {
    auto parsed = ParseIds(f.ids);
    if (!parsed.ok()) return Fail("logits", parsed.status());
    ids = std::move(parsed).value();
  }
  // --ids bypasses the tokenizer entirely.
  auto cm = OpenCliModel(f.model, f.threads, /*load_tokenizer=*/ids.empty(), f.exact, f.device,
                         LoraOf(f.lora), f.gpu_layers);
  if (!cm.ok()) return Fail("logits", cm.status());
  model::LoadedModel& lm = (*cm)->loaded;
  if (ids.empty()) ids = lm.tokenizer->Encode(f.prompt, /*add_special=*/true, true);
  if (ids.empty()) return Fail("logits", InvalidArgumentError("the prompt gives no tokens"));

  model::ForwardOptions fo;
  if (lm.model->is_recurrent()) {
    model::StateInit init;
    if (Status st = model::RecurrenceOptions::ParseInit(f.init, &init); !st.ok()) {
      return Fail("logits", st);
    }
    fo.steps = f.steps;
    std::mt19937_64 rng(static_cast<uint64_t>(f.seed));
    if (lm.model->weights().adapter.defined()) {
      auto s0 = model::MakeInitialState(init, static_cast<int64_t>(ids.size()),
                                        lm.model->config().n_embd, lm.model->config().embd_scale,
                                        &rng);
      if (!s0.ok()) return Fail("logits", s0.status());
      fo.init_state = std::move(s0).value();
    }
  } else if (f.steps > 1) {
    return Fail("logits", InvalidArgumentError("--steps needs a model with a recurrent core"));
  }
  auto res = lm.model->Forward(ids, nullptr, fo);
  if (!res.ok()) return Fail("logits", res.status());
  const float* row = res->logits.data_as<float>();
  const int32_t n_vocab = lm.model->config().n_vocab;
  std::vector<model::TokenId> order(static_cast<size_t>(n_vocab));
  for (int32_t i = 0; i < n_vocab; ++i) order[static_cast<size_t>(i)] = i;
  const size_t k = std::min<size_t>(static_cast<size_t>(f.top), order.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                    [&](model::TokenId a, model::TokenId b) {
                      return row[a] > row[b] || (row[a] == row[b] && a < b);
                    });
  order.resize(k);
  if (f.json) {
    nlohmann::json j;
    j["model"] = (*cm)->path;
    j["n_tokens"] = ids.size();
    j["ids"] = ids;
    nlohmann::json top = nlohmann::json::array();
    for (model::TokenId id : order) {
      nlohmann::json e = {{"id", id}, {"logit", row[id]}};
      if (lm.tokenizer) e["piece"] = lm.tokenizer->TokenToPiece(id);
      top.push_back(std::move(e));
    }
    j["top"] = std::move(top);
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  for (model::TokenId id : order) {
    std::printf("%8d %12.5f", id, row[id]);
    if (lm.tokenizer) std::printf("  '%s'", lm.tokenizer->TokenToPiece(id).c_str());
    std::printf("\n");
  }
  return 0;
}

}  // namespace

void RegisterGenerateCommands(CLI::App& app, CommandContext& ctx) {
  const std::string model_help =
      std::string("GGUF file or Hugging Face folder (default: ") + kDefaultLlmPath + ")";
  {
    auto* cmd = app.add_subcommand("generate", "Generate text from a prompt, streamed to stdout");
    auto f = std::make_shared<GenerateFlags>();
    cmd->add_option("-m,--model", f->model, model_help);
    cmd->add_option("-p,--prompt", f->prompt, "Prompt text")->required();
    cmd->add_option("--lora", f->lora, kLoraHelp);
    cmd->add_option("-n,--n-predict", f->n_predict, "Tokens to generate at most")
        ->capture_default_str();
    cmd->add_option("--temp", f->temp, "Temperature (0 = greedy)")->capture_default_str();
    cmd->add_option("--top-k", f->top_k, "Top-k (0 = off)")->capture_default_str();
    cmd->add_option("--top-p", f->top_p, "Top-p (1 = off)")->capture_default_str();
    cmd->add_option("--min-p", f->min_p, "Min-p (0 = off)")->capture_default_str();
    cmd->add_option("--repeat-penalty", f->repeat_penalty, "Repetition penalty (1 = off)")
        ->capture_default_str();
    cmd->add_option("--repeat-last-n", f->repeat_last_n,
                    "Recent tokens the penalty looks at (-1 = all)")
        ->capture_default_str();
    cmd->add_option("--seed", f->seed, "Sampling seed (-1 = random, printed at the end)")
        ->capture_default_str();
    cmd->add_option("-c,--ctx", f->ctx, "Context size in tokens (0 = min(trained, 4096))")
        ->capture_default_str();
    cmd->add_option("--stop", f->stop, "Stop string (repeatable)");
    cmd->add_flag("--chat", f->chat, "Wrap the prompt in the model's chat template");
    cmd->add_option("--system", f->system, "System message for --chat");
    cmd->add_flag("--ignore-eos", f->ignore_eos, "Keep going after end-of-generation tokens");
    cmd->add_flag("--exact", f->exact, kExactHelp);
    cmd->add_option("-t,--threads", f->threads, "Threads (0 = all cores)")->capture_default_str();
    cmd->add_option("--device", f->device, kDeviceHelp)->capture_default_str();
    cmd->add_option("--gpu-layers,--ngl", f->gpu_layers, kGpuLayersHelp)->capture_default_str();
    cmd->add_option("--steps", f->steps,
                    "Recurrent core iterations r (Huginn; 0 = the model's mean_recurrence)")
        ->capture_default_str();
    cmd->add_option("--init", f->init, "Initial recurrent state: random (seeded by --seed) or zero")
        ->capture_default_str();
    cmd->add_option("--exit", f->exit,
                    "Adaptive per-token exit: none, kl, minp-kl, entropy-diff, latent-diff, "
                    "cosine, argmax-stability")
        ->capture_default_str();
    cmd->add_option("--exit-threshold", f->exit_threshold,
                    "Exit threshold (-1 = the criterion's default: kl 5e-4, minp-kl 1e-5, "
                    "entropy-diff 1e-3, latent-diff 0.03, cosine 1e-3, argmax-stability 5)")
        ->capture_default_str();
    cmd->add_option("--exit-min-steps", f->exit_min_steps, "No exit before this iteration")
        ->capture_default_str();
    cmd->add_option("--exit-every", f->exit_every, "Check the exit criterion every n iterations")
        ->capture_default_str();
    cmd->add_flag("--exit-not-in-prefill", f->exit_not_in_prefill,
                  "The prompt always runs the full r (adaptive exit only while decoding)");
    cmd->add_option("--kv-share,--kv-compress", f->kv_share,
                    "KV slots across iterations: full (one per iteration and core layer), sK "
                    "(compress-sK: K shared core slots, s4 = one per core layer), rK")
        ->capture_default_str();
    cmd->add_option("--warm-start", f->warm_start,
                    "Continuous chain of thought: off, normed (default), raw; off with "
                    "--draft-steps");
    cmd->add_option("--draft-steps", f->draft_steps,
                    "Self-speculative decoding: draft with this many iterations (0 = off)")
        ->capture_default_str();
    cmd->add_option("--lookahead", f->lookahead, "Tokens drafted per speculative round")
        ->capture_default_str();
    cmd->callback([&ctx, f] { ctx.exit_code = RunGenerate(*f); });
  }
  {
    auto* cmd = app.add_subcommand("logits", "Last-position top-K logits of a prompt");
    auto f = std::make_shared<LogitsFlags>();
    cmd->add_option("-m,--model", f->model, model_help);
    cmd->add_option("-p,--prompt", f->prompt, "Prompt text (tokenized with BOS if the model adds one)");
    cmd->add_option("--ids", f->ids, "Comma-separated token ids (bypasses the tokenizer)");
    cmd->add_option("--lora", f->lora, kLoraHelp);
    cmd->add_option("--top", f->top, "How many logits to print")->capture_default_str();
    cmd->add_flag("--json", f->json, "Print JSON");
    cmd->add_flag("--exact", f->exact, kExactHelp);
    cmd->add_option("-t,--threads", f->threads, "Threads (0 = all cores)")->capture_default_str();
    cmd->add_option("--device", f->device, kDeviceHelp)->capture_default_str();
    cmd->add_option("--gpu-layers,--ngl", f->gpu_layers, kGpuLayersHelp)->capture_default_str();
    cmd->add_option("--steps", f->steps,
                    "Recurrent core iterations r (Huginn; 0 = the model's mean_recurrence)")
        ->capture_default_str();
    cmd->add_option("--init", f->init, "Initial recurrent state: random (seeded by --seed) or zero")
        ->capture_default_str();
    cmd->add_option("--seed", f->seed, "Seed of --init random")->capture_default_str();
    cmd->callback([&ctx, f] { ctx.exit_code = RunLogits(*f); });
  }
}

}  // namespace muninn::tools
