// The default model (SmolLM2-135M-Instruct, GGUF Q4_1) against goldens from an independent
// implementation: tests/data/llama_goldens.json, written by tools/reference/make_llama_goldens.py
// (Hugging Face transformers + PyTorch, float32 compute on weights dequantized from the same GGUF).
//
// Why the logits are not bit-equal, and the bound used: both sides use the same dequantized weight
// values, but muninn's quantized MatMul also quantizes each activation row to 8 bits per
// 32-element block (q8_0 / q8_1) before the integer dot product, as llama.cpp does. That adds a
// relative error of about 2^-8 per block to every projection, through 30 layers. Measured on these
// prompts: relative L2 error of the top-50 logits ≈ 1e-2 and per-layer hidden norms within ≈ 1%.
// The bounds below (3 % relative L2 on the top-50 logits, 0.6 absolute on any of them, 3 % on each
// layer's hidden-state norm) leave margin for ISA differences (scalar vs AVX2 vs AVX-512 sum
// order) while still failing on any real bug (a wrong RoPE layout, a missing norm, a transposed
// weight each move logits by tens of percent).
//
// The tests skip when models/ lacks the file (CI fetches it with scripts/setup.sh).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "muninn/core/cpu_backend.h"
#include "muninn/core/thread_pool.h"
#include "muninn/model/model_loader.h"
#include "muninn/model/sampler.h"

namespace muninn::model {
namespace {

const char kModelPath[] = MUNINN_SOURCE_DIR "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
const char kGoldenPath[] = MUNINN_SOURCE_DIR "/tests/data/llama_goldens.json";

class LlamaGoldenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(kModelPath)) return;
    pool_ = new ThreadPool(0);
    CpuBackendOptions bo;
    bo.pool = pool_;
    auto backend = CreateCpuBackend(bo);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(backend).value().release();
    LoadModelOptions lo;
    lo.load_tokenizer = true;
    auto loaded = LoadModel(kModelPath, backend_, lo);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    loaded_ = new LoadedModel(std::move(loaded).value());
    std::ifstream in(kGoldenPath);
    ASSERT_TRUE(in.good()) << "missing " << kGoldenPath;
    goldens_ = new nlohmann::json(nlohmann::json::parse(in));
  }
  static void TearDownTestSuite() {
    delete goldens_;
    delete loaded_;
    delete backend_;
    delete pool_;
    goldens_ = nullptr;
    loaded_ = nullptr;
    backend_ = nullptr;
    pool_ = nullptr;
  }
  void SetUp() override {
    if (loaded_ == nullptr) GTEST_SKIP() << kModelPath << " not present; run scripts/setup.sh";
  }
  static std::vector<TokenId> Ids(const nlohmann::json& j) {
    return j.get<std::vector<TokenId>>();
  }

  static ThreadPool* pool_;
  static Backend* backend_;
  static LoadedModel* loaded_;
  static nlohmann::json* goldens_;
};

ThreadPool* LlamaGoldenTest::pool_ = nullptr;
Backend* LlamaGoldenTest::backend_ = nullptr;
LoadedModel* LlamaGoldenTest::loaded_ = nullptr;
nlohmann::json* LlamaGoldenTest::goldens_ = nullptr;

TEST_F(LlamaGoldenTest, RealModelLogitsAndLayerNormsMatch) {
  Model& model = *loaded_->model;
  ASSERT_EQ((*goldens_)["n_layer"].get<int>(), model.config().n_layer);
  ASSERT_EQ((*goldens_)["vocab_size"].get<int>(), model.config().n_vocab);
  for (const auto& p : (*goldens_)["prompts"]) {
    SCOPED_TRACE(p["text"].get<std::string>());
    const std::vector<TokenId> ids = Ids(p["ids"]);
    std::vector<double> layer_norms(static_cast<size_t>(model.config().n_layer), -1.0);
    ForwardOptions fo;
    fo.observer = [&](const Intermediate& im) {
      if (im.name != "hidden") return;
      const Tensor& h = im.value;  // [T, n_embd]
      const float* last = h.data_as<float>() + (h.dim(0) - 1) * h.dim(1);
      double s = 0.0;
      for (int64_t i = 0; i < h.dim(1); ++i) s += double{last[i]} * last[i];
      layer_norms[static_cast<size_t>(im.layer)] = std::sqrt(s);
    };
    auto cache = model.NewKvCache(KvCacheOptions{});
    ASSERT_TRUE(cache.ok()) << cache.status();
    auto res = model.Forward(ids, cache->get(), fo);
    ASSERT_TRUE(res.ok()) << res.status();
    const float* logits = res->logits.data_as<float>();

    const auto top_ids = Ids(p["top_ids"]);
    const auto top_logits = p["top_logits"].get<std::vector<double>>();
    double err2 = 0.0, ref2 = 0.0, max_abs = 0.0;
    for (size_t i = 0; i < top_ids.size(); ++i) {
      const double d = logits[top_ids[i]] - top_logits[i];
      err2 += d * d;
      ref2 += top_logits[i] * top_logits[i];
      max_abs = std::max(max_abs, std::abs(d));
    }
    const double rel = std::sqrt(err2 / ref2);
    EXPECT_LT(rel, 0.03) << "relative L2 error of the top-50 logits";
    EXPECT_LT(max_abs, 0.6) << "largest absolute logit error among the top 50";
    int64_t argmax = 0;
    for (int64_t i = 1; i < model.config().n_vocab; ++i) {
      if (logits[i] > logits[argmax]) argmax = i;
    }
    EXPECT_EQ(argmax, p["logits_stats"]["argmax"].get<int64_t>());
    const auto ref_norms = p["layer_output_norms"].get<std::vector<double>>();
    for (size_t l = 0; l < ref_norms.size(); ++l) {
      EXPECT_NEAR(layer_norms[l], ref_norms[l], 0.03 * ref_norms[l]) << "layer " << l << " output";
    }
    std::printf("[ golden ] %-40.40s rel L2 %.4f, max |d| %.4f\n",
                p["text"].get<std::string>().c_str(), rel, max_abs);
  }
}

// The 64-token greedy continuation, teacher-forced: prompt + golden continuation run as one
// batched prefill with logits for every position, and at each step the golden token must be our
// argmax, or (a near-tie that 8-bit activations may flip) within kTieMargin of it. Free-running
// decode would diverge for good at the first flipped near-tie, which says nothing about the rest.
TEST_F(LlamaGoldenTest, RealModelGreedyContinuationMatches) {
  constexpr float kTieMargin = 0.5f;
  Model& model = *loaded_->model;
  const int64_t n_vocab = model.config().n_vocab;
  int total = 0, exact = 0;
  for (const auto& p : (*goldens_)["prompts"]) {
    SCOPED_TRACE(p["text"].get<std::string>());
    std::vector<TokenId> seq = Ids(p["ids"]);
    const size_t n_prompt = seq.size();
    const std::vector<TokenId> want = Ids(p["greedy_ids"]);
    seq.insert(seq.end(), want.begin(), want.end() - 1);
    ForwardOptions fo;
    fo.all_logits = true;
    auto res = model.Forward(seq, nullptr, fo);
    ASSERT_TRUE(res.ok()) << res.status();
    int first_mismatch = -1;
    for (size_t i = 0; i < want.size(); ++i) {
      const float* row = res->logits.data_as<float>() + (n_prompt - 1 + i) * n_vocab;
      int64_t argmax = 0;
      for (int64_t v = 1; v < n_vocab; ++v) {
        if (row[v] > row[argmax]) argmax = v;
      }
      ++total;
      if (argmax == want[i]) {
        ++exact;
        continue;
      }
      if (first_mismatch < 0) first_mismatch = static_cast<int>(i);
      EXPECT_LE(row[argmax] - row[want[i]], kTieMargin)
          << "step " << i << ": golden token " << want[i] << " vs our argmax " << argmax;
    }
    std::printf("[ golden ] %-40.40s greedy: first near-tie flip at step %d\n",
                p["text"].get<std::string>().c_str(), first_mismatch);
  }
  // Flips must stay rare: near-ties, not a drift.
  EXPECT_GE(exact, total * 95 / 100) << exact << " of " << total << " steps agree exactly";
}

// Free-running decode through the KV cache (one token per step, default q8 activations)
// reproduces each prompt's golden greedy tokens up to the first step where the reference's own
// top1 - top2 margin (greedy_margins) is below the teacher-forced test's kTieMargin: before it,
// the q8 activation error (logits within ~0.5) cannot flip the argmax. (Until 2026-12-01 this
// compared the chat prompt's first 32 tokens against goldens HF had made with the prompt's
// <|im_end|> masked out; the corrected reference has margins 0.49, 0.19, 0.01 at steps 13, 17, 23.)
// Both KV cache dtypes the CPU offers hold to it: f16 and q8_0 (configs/smollm2-135m.json's).
TEST_F(LlamaGoldenTest, RealModelDecodeThroughCacheMatchesGreedyPrefix) {
  constexpr float kTieMargin = 0.5f;
  Model& model = *loaded_->model;
  const size_t n_vocab = static_cast<size_t>(model.config().n_vocab);
  auto sampler = Sampler::Create(SamplerOptions::Greedy());
  ASSERT_TRUE(sampler.ok());
  for (const DType kv_dtype : {DType::kF16, DType::kQ8_0}) {
    size_t compared = 0;
    KvCacheOptions ko;
    ko.dtype = kv_dtype;
    for (const auto& p : (*goldens_)["prompts"]) {
      SCOPED_TRACE(p["text"].get<std::string>() + ", KV cache " + std::string(DTypeName(kv_dtype)));
      const std::vector<TokenId> ids = Ids(p["ids"]);
      std::vector<TokenId> want = Ids(p["greedy_ids"]);
      const auto margins = p["greedy_margins"].get<std::vector<float>>();
      const size_t n = static_cast<size_t>(
          std::find_if(margins.begin(), margins.end(), [](float m) { return m < kTieMargin; }) -
          margins.begin());
      want.resize(n);
      compared += n;
      auto cache = model.NewKvCache(ko);
      ASSERT_TRUE(cache.ok());
      auto res = model.Forward(ids, cache->get());
      ASSERT_TRUE(res.ok()) << res.status();
      std::vector<TokenId> got;
      while (got.size() < want.size()) {
        const TokenId next =
            sampler->Sample(std::span<const float>(res->logits.data_as<float>(), n_vocab), {});
        got.push_back(next);
        const TokenId one[] = {next};
        res = model.Forward(one, cache->get());
        ASSERT_TRUE(res.ok()) << res.status();
      }
      EXPECT_EQ(got, want);
      EXPECT_EQ((*cache)->n_past(), static_cast<int64_t>(ids.size() + want.size()));
    }
    EXPECT_GE(compared, 20u) << "the goldens leave too few steps above the q8 tie margin";
  }
}

// The same weights dequantized to f32 (so MatMul runs in float, with no activation quantization)
// must track the goldens much more tightly: this separates the model's math from the q8
// activation error that the bounds above allow for. Measured: max |d| ≈ 2e-5 (float32 rounding).
// Slow (f32 matmuls over 540 MB of weights): label "slow".
TEST_F(LlamaGoldenTest, RealModelDequantizedWeightsMatchTightlySlow) {
  const Model& q = *loaded_->model;
  auto to_f32 = [](const Tensor& t) {
    auto out = Tensor::Empty(DType::kF32, t.shape());
    MUNINN_CHECK(out.ok());
    MUNINN_CHECK(backend_->Copy(t, &*out).ok());
    return std::move(out).value();
  };
  ModelWeights w;
  w.tok_embd = to_f32(q.weights().tok_embd);
  w.output_norm = q.weights().output_norm;
  w.output = w.tok_embd;
  for (const LayerWeights& l : q.weights().layers) {
    LayerWeights d = l;
    for (Tensor* t : {&d.wq, &d.wk, &d.wv, &d.wo, &d.w_gate, &d.w_up, &d.w_down}) *t = to_f32(*t);
    w.layers.push_back(std::move(d));
  }
  auto model = Model::Create(backend_, q.config(), std::move(w), q.layout());
  ASSERT_TRUE(model.ok()) << model.status();
  for (const auto& p : (*goldens_)["prompts"]) {
    SCOPED_TRACE(p["text"].get<std::string>());
    auto res = (*model)->Forward(Ids(p["ids"]), nullptr);
    ASSERT_TRUE(res.ok()) << res.status();
    const auto top_ids = Ids(p["top_ids"]);
    const auto top_logits = p["top_logits"].get<std::vector<double>>();
    double max_abs = 0.0;
    for (size_t i = 0; i < top_ids.size(); ++i) {
      max_abs = std::max(max_abs, std::abs(res->logits.data_as<float>()[top_ids[i]] - top_logits[i]));
    }
    std::printf("[ golden ] f32 weights: max |d| %.5f\n", max_abs);
    EXPECT_LT(max_abs, 1e-3);
  }
}

// With CpuBackendOptions::exact_matmul the quantized weights are dequantized in the MatMul and the
// activations stay f32, and with an f32 KV cache this is the computation the goldens ran, up to
// float32 summation order. Free-running greedy decode through the KV cache (prefill, then one token
// per step) must then reproduce every golden 64-token continuation, token for token, up to the
// first step where the REFERENCE itself saw a near-tie: the goldens record HF's own top1 - top2
// logit margin at every step (greedy_margins), and a step whose margin is below kRefTieMargin may
// flip on summation order alone, so the comparison of that prompt stops there.
//
// kMarginTolerance, the numerical claim: at every compared step our logit gap between the
// reference's top-2 tokens equals the reference's margin within 2e-4. The f32-weight test above
// measures |our logit - HF logit| <= ~2e-5 at prompt ends; the exact path reads the same f32 block
// values as gguf-py's dequantization, and the cached decode adds float32 summation-order noise
// only. Measured (2026-12-01, AVX-512): max |our margin - reference margin| over all 320 steps
// 2.4e-5, so 2e-4 is a ~8x margin for other ISAs' summation orders.
// kRefTieMargin = 1e-3: five times that tolerance, so a reference margin above it cannot flip
// unless something is really wrong. The smallest reference margin of these goldens is 0.0100
// (chat prompt, step 23: "," over " and", which we reproduce to 2e-5), so today no prompt stops
// early; the rule is there for regenerated or extended goldens.
// History: before 2026-12-01 the chat prompt "diverged" at step 23 (HF margin 0.024 one way, ours
// 0.010 the other). The cause was in the reference: generate() without an attention mask infers
// one from pad_token_id (<|im_end|> there) and masked the prompt's <|im_end|> out, so HF's
// continuation came from a different input (our margins were off by 1.26 from step 0).
// Slow: ~25 s on 2 loaded cores (320 exact decode steps): label "slow".
TEST_F(LlamaGoldenTest, RealModelExactMatMulGreedyContinuationIsIdenticalSlow) {
  constexpr float kMarginTolerance = 2e-4f;
  constexpr float kRefTieMargin = 1e-3f;
  CpuBackendOptions bo;
  bo.pool = pool_;
  bo.exact_matmul = true;
  auto backend = CreateCpuBackend(bo);
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto loaded = LoadModel(kModelPath, backend->get(), LoadModelOptions{});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  Model& model = *loaded->model;
  const size_t n_vocab = static_cast<size_t>(model.config().n_vocab);
  auto sampler = Sampler::Create(SamplerOptions::Greedy());
  ASSERT_TRUE(sampler.ok());
  for (const auto& p : (*goldens_)["prompts"]) {
    SCOPED_TRACE(p["text"].get<std::string>());
    ASSERT_TRUE(p.contains("greedy_margins")) << "regenerate " << kGoldenPath
                                              << " with tools/reference/make_llama_goldens.py";
    const std::vector<TokenId> want = Ids(p["greedy_ids"]);
    const std::vector<TokenId> runner_up = Ids(p["greedy_runner_up_ids"]);
    const auto ref_margin = p["greedy_margins"].get<std::vector<float>>();
    ASSERT_EQ(ref_margin.size(), want.size());
    KvCacheOptions ko;
    ko.dtype = DType::kF32;  // as the goldens' framework keeps K/V; f16 moves logits by ~1e-2
    auto cache = model.NewKvCache(ko);
    ASSERT_TRUE(cache.ok()) << cache.status();
    auto res = model.Forward(Ids(p["ids"]), cache->get());
    ASSERT_TRUE(res.ok()) << res.status();
    size_t step = 0;
    int ref_tie = -1;
    float max_margin_dev = 0.0f;
    for (; step < want.size(); ++step) {
      if (ref_margin[step] < kRefTieMargin) {
        ref_tie = static_cast<int>(step);  // the reference's own near-tie: stop comparing
        break;
      }
      const std::span<const float> logits(res->logits.data_as<float>(), n_vocab);
      const TokenId next = sampler->Sample(logits, {});
      const float ours = logits[static_cast<size_t>(want[step])] -
                         logits[static_cast<size_t>(runner_up[step])];
      max_margin_dev = std::max(max_margin_dev, std::abs(ours - ref_margin[step]));
      EXPECT_NEAR(ours, ref_margin[step], kMarginTolerance)
          << "step " << step << ": margin of golden " << want[step] << " over " << runner_up[step];
      if (next != want[step]) {
        ADD_FAILURE() << "step " << step << ": we pick " << next << ", the golden is "
                      << want[step] << " (reference margin " << ref_margin[step] << ", ours "
                      << ours << ")";
        break;
      }
      const TokenId one[] = {next};
      res = model.Forward(one, cache->get());
      ASSERT_TRUE(res.ok()) << res.status();
    }
    std::string head = p["text"].get<std::string>().substr(0, 40);
    std::replace(head.begin(), head.end(), '\n', ' ');
    std::printf("[ golden ] exact %-40s %zu/%zu steps identical, reference tie at %d, "
                "max |our margin - reference margin| %.2e\n",
                head.c_str(), step, want.size(), ref_tie, max_margin_dev);
  }
}

TEST_F(LlamaGoldenTest, RealModelTokenizerGivesTheGoldenIds) {
  ASSERT_NE(loaded_->tokenizer, nullptr);
  for (const auto& p : (*goldens_)["prompts"]) {
    const std::string text = p["text"].get<std::string>();
    EXPECT_EQ(loaded_->tokenizer->Encode(text, /*add_special=*/false, /*parse_special=*/true),
              Ids(p["ids"]))
        << text;
  }
}

}  // namespace
}  // namespace muninn::model
