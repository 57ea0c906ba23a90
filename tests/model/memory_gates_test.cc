// Memory gates (per-head memory logit biases, LoraConfig::memory_gate_layers) on the tiny random
// llama of tiny_lora_llama.h: the training forward with gates equals the inference model with the
// adapter merged (LayerWeights::mem_bias), gates at 0 are exactly the model without gates, each
// gate's gradient equals a central finite difference of the loss, and the PEFT folder carries the
// gates in memory_gates.safetensors (written, read back, same logits with memory; removed when a
// folder is rewritten without gates).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "muninn/core/cpu_backend.h"
#include "muninn/model/lora.h"
#include "muninn/model/lora_merge.h"
#include "muninn/model/model_loader.h"
#include "muninn/model/peft_adapter.h"
#include "muninn/model/train_model.h"
#include "tests/model/tiny_lora_llama.h"

namespace muninn::model {
namespace {

namespace tl = tiny_lora;

// Gated layers: both trained layers (1 and 2) of the tiny model.
const std::vector<int32_t> kGateLayers = {1, 2};
// Biases large enough to move the memory / local balance.
const float kGates[2][tl::kHeads] = {{0.8f, -1.2f, 0.3f, 1.5f}, {-0.5f, 1.0f, 2.0f, -1.5f}};

class MemoryGatesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(::testing::TempDir() + "/muninn_memory_gates_" +
                           std::to_string(::getpid()));
    tl::WriteModel(*dir_ + "/model");
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    std::filesystem::remove_all(*dir_, ec);
    delete dir_;
  }
  void SetUp() override {
    auto b = CreateCpuBackend(CpuBackendOptions{});
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = std::move(b).value();
    LoadModelOptions lo;
    lo.load_tokenizer = false;
    auto m = LoadModel(*dir_ + "/model", backend_.get(), lo);
    ASSERT_TRUE(m.ok()) << m.status();
    loaded_ = std::move(m).value();
  }
  static LoraConfig GatedConfig() {
    LoraConfig c = tl::AdapterConfig();
    c.memory_gate_layers = kGateLayers;
    return c;
  }
  // The goldens' LoRA values, plus kGates when `set_gates` (else the gates stay 0).
  LoraParams Params(const LoraConfig& c, bool set_gates) {
    auto p = LoraParams::Create(loaded_.model->config(), loaded_.model->weights(), c);
    MUNINN_CHECK(p.ok()) << p.status();
    tl::SetAdapterValues(&*p);
    if (set_gates) {
      for (size_t i = 0; i < c.memory_gate_layers.size(); ++i) {
        const int64_t off = p->OffsetMemGate(c.memory_gate_layers[i]);
        MUNINN_CHECK(off >= 0);
        std::copy(kGates[i], kGates[i] + tl::kHeads, p->values().begin() + off);
      }
    }
    return std::move(p).value();
  }
  std::unique_ptr<TrainModel> Train(const LoraConfig& c) {
    auto tm = TrainModel::Create(loaded_.model.get(), c, TrainModelOptions{});
    MUNINN_CHECK(tm.ok()) << tm.status();
    return std::move(tm).value();
  }
  // Memory K/V of 7 keys on every layer, memory queries at `query_position` (-1: ordinary).
  static MemoryKV Memory(int64_t query_position) {
    constexpr int kM = 7;
    MemoryKV mem;
    for (int l = 0; l < tl::kLayers; ++l) {
      LayerMemoryKV lm;
      lm.k = Tensor::FromVector(Shape{kM, tl::kHeadsKv, tl::kHd},
                                tl::Uniform(4000 + 2 * l, kM * tl::kHeadsKv * tl::kHd, 1.5))
                 .value();
      lm.v = Tensor::FromVector(Shape{kM, tl::kHeadsKv, tl::kHd},
                                tl::Uniform(4001 + 2 * l, kM * tl::kHeadsKv * tl::kHd, 1.0))
                 .value();
      lm.query_position = query_position;
      mem.layers.push_back(lm);
    }
    return mem;
  }
  // Mean cross-entropy of the supervised rows of an inference forward.
  static double InferenceLoss(Model& m, const std::vector<int32_t>& ids,
                              const std::vector<int32_t>& labels, const MemoryKV* mem) {
    ForwardOptions fo;
    fo.all_logits = true;
    fo.memory = mem;
    fo.start_pos = 5;
    auto r = m.Forward(ids, nullptr, fo);
    MUNINN_CHECK(r.ok()) << r.status();
    double sum = 0.0;
    int64_t n = 0;
    for (size_t t = 0; t < ids.size(); ++t) {
      if (labels[t] == kIgnoreLabel) continue;
      const float* row = r->logits.data_as<const float>() + t * tl::kVocab;
      double mx = row[0], z = 0.0;
      for (int v = 0; v < tl::kVocab; ++v) mx = std::max(mx, static_cast<double>(row[v]));
      for (int v = 0; v < tl::kVocab; ++v) z += std::exp(row[v] - mx);
      sum += mx + std::log(z) - row[labels[t]];
      ++n;
    }
    return sum / static_cast<double>(n);
  }

  static std::string* dir_;
  std::unique_ptr<Backend> backend_;
  LoadedModel loaded_;
};
std::string* MemoryGatesTest::dir_ = nullptr;

TEST_F(MemoryGatesTest, GatesAtZeroAreTheModelWithoutGates) {
  const LoraConfig plain_c = tl::AdapterConfig();
  LoraParams plain = Params(plain_c, false);
  LoraParams gated = Params(GatedConfig(), false);
  // The gates are the arena's tail; the LoRA layout before them is unchanged.
  ASSERT_EQ(gated.gates_offset(), plain.size());
  ASSERT_EQ(gated.size(), plain.size() + 2 * tl::kHeads);
  for (int64_t i = 0; i < plain.size(); ++i) ASSERT_EQ(plain.values()[i], gated.values()[i]);
  auto tm_plain = Train(plain_c);
  auto tm_gated = Train(GatedConfig());
  std::vector<int32_t> ids, labels;
  tl::Block(0, &ids, &labels);
  const MemoryKV mem = Memory(-1);
  TrainBatch batch{ids, labels};
  batch.memory = &mem;
  batch.start_pos = 5;
  std::vector<float> g_plain(static_cast<size_t>(plain.size()), 0.0f);
  std::vector<float> g_gated(static_cast<size_t>(gated.size()), 0.0f);
  auto a = tm_plain->ForwardBackward(plain, batch, 0.0f, g_plain);
  auto b = tm_gated->ForwardBackward(gated, batch, 0.0f, g_gated);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_EQ(a->loss_sum, b->loss_sum);
  for (int64_t i = 0; i < plain.size(); ++i) ASSERT_EQ(g_plain[i], g_gated[i]) << i;
  // Without memory the gates do nothing and get no gradient.
  TrainBatch no_mem{ids, labels};
  std::fill(g_gated.begin(), g_gated.end(), 0.0f);
  LoraParams set = Params(GatedConfig(), true);
  auto c = tm_gated->ForwardBackward(set, no_mem, 0.0f, g_gated);
  auto d = tm_plain->Loss(plain, no_mem);
  ASSERT_TRUE(c.ok() && d.ok());
  EXPECT_EQ(c->loss_sum, d->loss_sum);
  for (int64_t i = set.gates_offset(); i < set.size(); ++i) EXPECT_EQ(g_gated[i], 0.0f);
}

TEST_F(MemoryGatesTest, MatchInferenceAndFiniteDifferences) {
  const LoraConfig c = GatedConfig();
  LoraParams p = Params(c, true);
  auto merged = MergeLora(*loaded_.model, p);
  ASSERT_TRUE(merged.ok()) << merged.status();
  for (int32_t l : kGateLayers) {
    ASSERT_EQ((*merged)->weights().layers[static_cast<size_t>(l)].mem_bias.size(),
              static_cast<size_t>(tl::kHeads));
  }
  EXPECT_TRUE((*merged)->weights().layers[0].mem_bias.empty());
  auto tm = Train(c);
  const LoraParams no_gates = Params(tl::AdapterConfig(), false);
  auto tm_plain = Train(tl::AdapterConfig());
  for (int64_t query_position : {int64_t{-1}, int64_t{30}}) {
    SCOPED_TRACE(testing::Message() << "query_position " << query_position);
    const MemoryKV mem = Memory(query_position);
    std::vector<int32_t> ids, labels;
    tl::Block(0, &ids, &labels);
    TrainBatch batch{ids, labels};
    batch.memory = &mem;
    batch.start_pos = 5;
    std::vector<float> grads(static_cast<size_t>(p.size()), 0.0f);
    auto r = tm->ForwardBackward(p, batch, 0.0f, grads);
    ASSERT_TRUE(r.ok()) << r.status();
    auto ungated = tm_plain->Loss(no_gates, batch);
    ASSERT_TRUE(ungated.ok());
    EXPECT_GT(std::abs(ungated->mean() - r->mean()), 1e-3) << "the gates change nothing";
    // The inference model with the gates merged gives the training loss.
    EXPECT_NEAR(InferenceLoss(**merged, ids, labels, &mem), r->mean(), 1e-5 * r->mean());
    // Every gate element against a central finite difference of the f32 loss: h = 1e-2 leaves
    // ~5e-4 absolute of f32 noise (3 % + 1e-3, as the LoRA elements in lora_golden_test.cc).
    double max_g = 0.0;
    for (int64_t i = p.gates_offset(); i < p.size(); ++i) {
      max_g = std::max(max_g, std::abs(static_cast<double>(grads[static_cast<size_t>(i)])));
      double loss_at[2];
      for (int sgn = 0; sgn < 2; ++sgn) {
        LoraParams q = p;
        q.values()[static_cast<size_t>(i)] += sgn == 0 ? 1e-2f : -1e-2f;
        auto l = tm->Loss(q, batch);
        ASSERT_TRUE(l.ok());
        loss_at[sgn] = l->mean();
      }
      const float g = grads[static_cast<size_t>(i)];
      EXPECT_NEAR((loss_at[0] - loss_at[1]) / 2e-2, g, 3e-2 * std::abs(g) + 1e-3)
          << "gate element " << i - p.gates_offset();
    }
    EXPECT_GT(max_g, 1e-2) << "the gates get (almost) no gradient: the check above is vacuous";
  }
}

TEST_F(MemoryGatesTest, PeftFolderRoundTripsTheGates) {
  const LoraConfig c = GatedConfig();
  LoraParams p = Params(c, true);
  const std::string out = *dir_ + "/adapter";
  ASSERT_TRUE(WritePeftAdapter(p, loaded_.model->weights(), out, "tiny").ok());
  ASSERT_TRUE(std::filesystem::exists(out + "/memory_gates.safetensors"));
  auto back = ReadPeftAdapter(out, loaded_.model->config(), loaded_.model->weights());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->config().memory_gate_layers, kGateLayers);
  ASSERT_EQ(back->size(), p.size());
  for (int64_t i = 0; i < p.size(); ++i) ASSERT_EQ(back->values()[i], p.values()[i]) << i;
  // Same logits with memory from the loaded folder as from the parameters themselves.
  auto m1 = MergeLora(*loaded_.model, p);
  auto m2 = MergeLora(*loaded_.model, *back);
  ASSERT_TRUE(m1.ok() && m2.ok());
  const MemoryKV mem = Memory(-1);
  std::vector<int32_t> ids, labels;
  tl::Block(1, &ids, &labels);
  ForwardOptions fo;
  fo.all_logits = true;
  fo.memory = &mem;
  auto r1 = (*m1)->Forward(ids, nullptr, fo);
  auto r2 = (*m2)->Forward(ids, nullptr, fo);
  ASSERT_TRUE(r1.ok() && r2.ok());
  const int64_t n = r1->logits.numel();
  ASSERT_EQ(n, r2->logits.numel());
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(r1->logits.data_as<const float>()[i], r2->logits.data_as<const float>()[i]) << i;
  }
  // At scale 0 the gates vanish like the LoRA delta: the base model's logits with memory.
  auto zero = MergeLora(*loaded_.model, *back, 0.0f);
  ASSERT_TRUE(zero.ok());
  for (int32_t l : kGateLayers) {
    for (float b : (*zero)->weights().layers[static_cast<size_t>(l)].mem_bias) EXPECT_EQ(b, 0.0f);
  }
  // A GGUF model file cannot hold gates: merging into one is refused, not silently lossy.
  const Status st = MergeLoraIntoGguf(*dir_ + "/model", *back, 1.0f, *dir_ + "/merged.gguf");
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented) << st;
  // Rewriting the folder without gates removes the file; reading gives no gates.
  const LoraParams plain = Params(tl::AdapterConfig(), false);
  ASSERT_TRUE(WritePeftAdapter(plain, loaded_.model->weights(), out, "tiny").ok());
  EXPECT_FALSE(std::filesystem::exists(out + "/memory_gates.safetensors"));
  auto again = ReadPeftAdapter(out, loaded_.model->config(), loaded_.model->weights());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->config().memory_gate_layers.empty());
}

TEST_F(MemoryGatesTest, BadGateConfigsAreRefused) {
  LoraConfig c = tl::AdapterConfig();
  c.memory_gate_layers = {0};  // below the trained layers
  EXPECT_FALSE(c.Validate(loaded_.model->config()).ok());
  c.memory_gate_layers = {2, 1};  // not ascending
  EXPECT_FALSE(c.Validate(loaded_.model->config()).ok());
  c.memory_gate_layers = {3};  // past the last layer
  EXPECT_FALSE(c.Validate(loaded_.model->config()).ok());
  // A model whose layers hold gates of the wrong size, or non-finite ones, is refused.
  ModelWeights w = loaded_.model->weights();
  w.layers[1].mem_bias = {1.0f, 2.0f};
  EXPECT_FALSE(
      Model::Create(loaded_.model->backend(), loaded_.model->config(), w, loaded_.model->layout())
          .ok());
  w.layers[1].mem_bias = {0.0f, NAN, 0.0f, 0.0f};
  EXPECT_FALSE(
      Model::Create(loaded_.model->backend(), loaded_.model->config(), w, loaded_.model->layout())
          .ok());
}

}  // namespace
}  // namespace muninn::model
