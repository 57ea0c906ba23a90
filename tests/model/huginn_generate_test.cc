// Generation features of recurrent-depth models on a tiny random Huginn checkpoint
// (HuginnWriter): self-speculative greedy output equals plain greedy output token for token,
// adaptive exit at threshold 0 equals fixed r (and exits early at the default threshold), the KV
// memory that compress-s4 saves, seeded random initial states, warm start, and the recurrence
// options' validation.
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include "muninn/core/cpu_backend.h"
#include "muninn/model/generator.h"
#include "muninn/model/huginn_writer.h"
#include "muninn/model/model_loader.h"

namespace muninn::model {
namespace {

class HuginnGenerateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(::testing::TempDir() + "/muninn_huginn_gen_" +
                           std::to_string(::getpid()));
    HuginnWriterOptions o;
    o.mean_recurrence = 8;
    o.state_damp = 0.6;  // converges more slowly than the golden model: exit steps vary
    const Status st = WriteRandomHuginn(*dir_, o);
    MUNINN_CHECK(st.ok()) << st;
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    std::filesystem::remove_all(*dir_, ec);
    delete dir_;
  }
  void SetUp() override {
    auto b = CreateCpuBackend(CpuBackendOptions{});
    ASSERT_TRUE(b.ok());
    backend_ = std::move(b).value();
    LoadModelOptions lo;
    lo.load_tokenizer = false;
    lo.huginn_matrix_dtype = DType::kF32;
    auto m = LoadModel(*dir_, backend_.get(), lo);
    ASSERT_TRUE(m.ok()) << m.status();
    lm_ = std::move(m).value();
  }
  std::unique_ptr<KvCache> Cache(int32_t max_steps, const char* share = "full") {
    KvCacheOptions ko;
    ko.n_ctx = 96;
    ko.dtype = DType::kF32;
    ko.max_steps = max_steps;
    MUNINN_CHECK(KvSlotLayout::ParseShare(share, &ko.share, &ko.share_k).ok());
    auto c = lm_.model->NewKvCache(ko);
    MUNINN_CHECK(c.ok()) << c.status();
    return std::move(c).value();
  }
  GenerateResult Run(const GenerateOptions& go, int32_t max_steps = 8, const char* share = "full") {
    auto cache = Cache(max_steps, share);
    auto r = Generate(*lm_.model, *cache, nullptr, kPrompt, go);
    MUNINN_CHECK(r.ok()) << r.status();
    return std::move(r).value();
  }
  static GenerateOptions Greedy(int32_t steps) {
    GenerateOptions go;
    go.max_tokens = 40;
    go.sampler = SamplerOptions::Greedy();
    go.stop_at_eog = false;
    go.recurrence.steps = steps;
    go.recurrence.init = StateInit::kZero;
    go.recurrence.warm_start = WarmStart::kOff;
    return go;
  }

  static std::string* dir_;
  inline static const std::vector<TokenId> kPrompt = {1, 17, 42, 255, 3};
  std::unique_ptr<Backend> backend_;
  LoadedModel lm_;
};
std::string* HuginnGenerateTest::dir_ = nullptr;

TEST_F(HuginnGenerateTest, SelfSpeculativeGreedyEqualsPlainGreedy) {
  const GenerateResult plain = Run(Greedy(8));
  ASSERT_EQ(plain.tokens.size(), 40u);
  for (int32_t draft : {1, 2, 8}) {
    for (int32_t lookahead : {1, 3, 8}) {
      GenerateOptions go = Greedy(8);
      go.recurrence.draft_steps = draft;
      go.recurrence.lookahead = lookahead;
      auto cache = Cache(8);
      auto spec = Generate(*lm_.model, *cache, nullptr, kPrompt, go);
      ASSERT_TRUE(spec.ok()) << spec.status();
      EXPECT_EQ(spec->tokens, plain.tokens) << "draft " << draft << " lookahead " << lookahead;
      EXPECT_EQ(spec->stop_reason, StopReason::kMaxTokens);
      // The cache holds the prompt and every token but the last, as after plain generation.
      EXPECT_EQ(cache->n_past(), static_cast<int64_t>(kPrompt.size() + plain.tokens.size() - 1));
      EXPECT_GT(spec->n_rounds, 0);
      EXPECT_LE(spec->n_accepted, spec->n_drafted);
      if (draft == 8) {
        EXPECT_EQ(spec->n_accepted, spec->n_drafted);  // same r: every draft is accepted
      }
      if (draft == 1 && lookahead > 1) {
        EXPECT_LT(spec->n_accepted, spec->n_drafted);  // mismatches are rolled back
      }
    }
  }
}

TEST_F(HuginnGenerateTest, AdaptiveExitAtThresholdZeroEqualsFixedR) {
  const GenerateResult fixed = Run(Greedy(8));
  EXPECT_DOUBLE_EQ(fixed.mean_steps(), 8.0);
  for (ExitKind kind : {ExitKind::kKl, ExitKind::kMinpKl, ExitKind::kEntropyDiff,
                        ExitKind::kLatentDiff, ExitKind::kCosine, ExitKind::kArgmaxStability}) {
    GenerateOptions go = Greedy(8);
    go.recurrence.exit.kind = kind;
    go.recurrence.exit.threshold = 0.0;
    const GenerateResult r = Run(go);
    EXPECT_EQ(r.tokens, fixed.tokens) << ExitKindName(kind);
    EXPECT_DOUBLE_EQ(r.mean_steps(), 8.0) << ExitKindName(kind);
  }
}

TEST_F(HuginnGenerateTest, AdaptiveExitStopsEarlyAtDefaultThresholds) {
  for (ExitKind kind : {ExitKind::kKl, ExitKind::kLatentDiff, ExitKind::kArgmaxStability}) {
    GenerateOptions go = Greedy(32);
    go.max_tokens = 12;
    go.recurrence.exit.kind = kind;
    go.recurrence.exit.min_steps = 3;
    const GenerateResult r = Run(go, 32);
    EXPECT_LT(r.mean_steps(), 32.0) << ExitKindName(kind);
    EXPECT_GE(r.mean_steps(), 3.0) << ExitKindName(kind);
    // The same under compress-s4 sharing (any number of iterations fits).
    const GenerateResult s4 = Run(go, 1, "s4");
    EXPECT_LT(s4.mean_steps(), 32.0) << ExitKindName(kind);
    // do_not_exit_in_prefill: the prompt runs the full r.
    go.recurrence.exit.no_exit_in_prefill = true;
    const GenerateResult full_prefill = Run(go, 32);
    EXPECT_EQ(full_prefill.prefill_steps, 32) << ExitKindName(kind);
    EXPECT_LT(full_prefill.mean_steps(), 32.0) << ExitKindName(kind);
  }
}

TEST_F(HuginnGenerateTest, CompressS4SavesKvMemory) {
  auto full = Cache(32);
  auto s4 = Cache(32, "s4");
  const size_t slot = 96 * 4 * 16 * sizeof(float) * 2;  // n_ctx · n_kv · hd · f32 · (K, V)
  EXPECT_EQ(full->nbytes(), (2 + 4 * 32 + 2) * slot);
  EXPECT_EQ(s4->nbytes(), (2 + 4 + 2) * slot);
  EXPECT_EQ(full->bytes_per_token() / s4->bytes_per_token(), 16u);  // 132 / 8 = 16.5
  GenerateOptions go = Greedy(32);
  go.max_tokens = 8;
  const GenerateResult r = Run(go, 1, "s4");
  EXPECT_EQ(r.tokens.size(), 8u);
}

TEST_F(HuginnGenerateTest, RandomInitialStateIsSeededAndHasTheSpecifiedSpread) {
  std::mt19937_64 a(7), b(7), c(8);
  auto sa = MakeInitialState(StateInit::kRandom, 64, 64, 8.0f, &a);
  auto sb = MakeInitialState(StateInit::kRandom, 64, 64, 8.0f, &b);
  auto sc = MakeInitialState(StateInit::kRandom, 64, 64, 8.0f, &c);
  ASSERT_TRUE(sa.ok() && sb.ok() && sc.ok());
  double ss = 0.0, mx = 0.0;
  bool same = true, differ = false;
  for (int64_t i = 0; i < sa->numel(); ++i) {
    const float x = sa->data_as<const float>()[i];
    same &= x == sb->data_as<const float>()[i];
    differ |= x != sc->data_as<const float>()[i];
    ss += double{x} * x;
    mx = std::max(mx, std::abs(double{x}));
  }
  EXPECT_TRUE(same);
  EXPECT_TRUE(differ);
  // σ = √(2/(5·64))·8 = 0.632456 before truncation (truncation at 3σ shrinks it by ~1.3%).
  const double sigma = std::sqrt(ss / static_cast<double>(sa->numel()));
  EXPECT_NEAR(sigma, 0.632456 * 0.9866, 0.02);
  EXPECT_LE(mx, 3 * 0.632456 + 1e-5);
  EXPECT_FALSE(MakeInitialState(StateInit::kZero, 4, 64, 8.0f, nullptr)->defined());

  GenerateOptions go = Greedy(2);
  go.max_tokens = 16;
  go.sampler.temperature = 0.9f;
  go.sampler.top_k = 0;
  go.sampler.top_p = 1.0f;
  go.sampler.min_p = 0.0f;
  go.recurrence.init = StateInit::kRandom;
  go.recurrence.seed = 11;
  go.sampler.seed = 5;
  EXPECT_EQ(Run(go).tokens, Run(go).tokens);
}

TEST_F(HuginnGenerateTest, WarmStartFeedsThePreviousLatent) {
  // With warm start the second decode step's state starts from the first one's latent; check
  // by hand: prefill, then one token with init_state = that latent.
  GenerateOptions go = Greedy(1);
  go.max_tokens = 2;
  go.recurrence.warm_start = WarmStart::kNormed;
  const GenerateResult warm = Run(go);

  auto cache = Cache(8);
  ForwardOptions fo;
  fo.steps = 1;
  auto pre = lm_.model->Forward(kPrompt, cache.get(), fo);
  ASSERT_TRUE(pre.ok());
  ASSERT_EQ(pre->steps, 1);
  const float* lg = pre->logits.data_as<const float>();
  const TokenId first = static_cast<TokenId>(std::max_element(lg, lg + 300) - lg);
  ASSERT_EQ(first, warm.tokens[0]);
  auto last = pre->latent.Slice(0, static_cast<int64_t>(kPrompt.size()) - 1,
                                static_cast<int64_t>(kPrompt.size()));
  fo.init_state = *last->Contiguous();
  const TokenId one[] = {first};
  auto next = lm_.model->Forward(one, cache.get(), fo);
  ASSERT_TRUE(next.ok()) << next.status();
  lg = next->logits.data_as<const float>();
  EXPECT_EQ(static_cast<TokenId>(std::max_element(lg, lg + 300) - lg), warm.tokens[1]);
}

TEST_F(HuginnGenerateTest, OptionsAreValidated) {
  GenerateOptions go = Greedy(8);
  go.recurrence.draft_steps = 2;
  go.recurrence.warm_start = WarmStart::kNormed;
  EXPECT_EQ(go.Validate().code(), StatusCode::kInvalidArgument);
  go.recurrence.warm_start = WarmStart::kOff;
  go.recurrence.exit.kind = ExitKind::kKl;
  EXPECT_EQ(go.Validate().code(), StatusCode::kInvalidArgument);
  ExitKind k;
  EXPECT_EQ(ExitOptions::ParseKind("bogus", &k).code(), StatusCode::kInvalidArgument);
  KvShare share;
  int32_t kk;
  EXPECT_TRUE(KvSlotLayout::ParseShare("compress-s16", &share, &kk).ok());
  EXPECT_EQ(kk, 16);
  EXPECT_EQ(KvSlotLayout::ParseShare("s0", &share, &kk).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace muninn::model
