// Whole-model LoRA training checks on the tiny random llama of tiny_lora_llama.h against
// tests/data/lora_goldens.json, written by tools/reference/make_lora_goldens.py with PyTorch
// autograd + transformers' LlamaForCausalLM + PEFT in float64 (nothing of muninn involved):
//  - the loss of one block and the gradient of every LoRA A/B and trained norm weight;
//  - a 10-step trace (AdamW, warm-up + linear decay, clipping, 2 accumulated micro-batches):
//    each step's loss, gradient norm and learning rate, and every parameter after the 10 steps.
//
// Tolerances: muninn runs in float32 (weights, activations, sgemm), the goldens in float64. A
// 3-layer forward/backward of this size leaves relative errors around 1e-6 of each tensor's
// scale, so gradients must match to 2e-5·(max |g| of the tensor) + 1e-6·|g|, the loss to 1e-5
// relative. Over 10 AdamW steps, updates of size ~lr = 1e-2 per element, float32 rounding of m/√v
// grows to ~1e-6 relative per step: parameters to 2e-5 absolute (their scale is ~0.1-1), losses
// to 2e-5 relative.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "muninn/core/cpu_backend.h"
#if defined(MUNINN_HAVE_CUDA)
#include "muninn/core/cuda_backend.h"
#endif
#include "muninn/core/optimizer.h"
#include "muninn/model/lora.h"
#include "muninn/model/lora_merge.h"
#include "muninn/model/model_loader.h"
#include "muninn/model/train_model.h"
#include "tests/model/tiny_lora_llama.h"
#include "tests/source_dir.h"
#include "tests/retriever/device_double.h"

namespace muninn::model {
namespace {

namespace tl = tiny_lora;

class LoraGoldenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::ifstream f(muninn::testing::SourceDir() + "/tests/data/lora_goldens.json");
    MUNINN_CHECK(f.good()) << "tests/data/lora_goldens.json is missing";
    goldens_ = new nlohmann::json(nlohmann::json::parse(f));
    dir_ =
        new std::string(::testing::TempDir() + "/muninn_lora_golden_" + std::to_string(::getpid()));
    tl::WriteModel(*dir_);
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    std::filesystem::remove_all(*dir_, ec);
    delete goldens_;
    delete dir_;
  }
  void SetUp() override {
    auto b = CreateCpuBackend(CpuBackendOptions{});
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = std::move(b).value();
    LoadModelOptions lo;
    lo.load_tokenizer = false;
    auto m = LoadModel(*dir_, backend_.get(), lo);
    ASSERT_TRUE(m.ok()) << m.status();
    loaded_ = std::move(m).value();
  }
  LoraParams Params() {
    auto p =
        LoraParams::Create(loaded_.model->config(), loaded_.model->weights(), tl::AdapterConfig());
    MUNINN_CHECK(p.ok()) << p.status();
    tl::SetAdapterValues(&*p);
    return std::move(p).value();
  }
  std::unique_ptr<TrainModel> Train(bool recompute = false) {
    TrainModelOptions o;
    o.recompute = recompute;
    auto tm = TrainModel::Create(loaded_.model.get(), tl::AdapterConfig(), o);
    MUNINN_CHECK(tm.ok()) << tm.status();
    return std::move(tm).value();
  }

  static nlohmann::json* goldens_;
  static std::string* dir_;
  std::unique_ptr<Backend> backend_;
  LoadedModel loaded_;
};
nlohmann::json* LoraGoldenTest::goldens_ = nullptr;
std::string* LoraGoldenTest::dir_ = nullptr;

// Compares every tensor of `got` (LoraParams layout) with `want` (PEFT name -> values).
void ExpectTensorsNear(const LoraParams& p, std::span<const float> got, const nlohmann::json& want,
                       double rel_of_max, double rel, double abs_tol, const std::string& what) {
  ASSERT_EQ(want.size(), p.tensors().size()) << what;
  for (const LoraTensor& t : p.tensors()) {
    const std::string name = t.PeftName();
    ASSERT_TRUE(want.contains(name)) << what << ": goldens lack " << name;
    const nlohmann::json& w = want[name];
    ASSERT_EQ(static_cast<int64_t>(w.size()), t.size()) << what << " " << name;
    double max_abs = 0.0;
    for (const auto& v : w) max_abs = std::max(max_abs, std::abs(v.get<double>()));
    for (int64_t i = 0; i < t.size(); ++i) {
      const double ref = w[static_cast<size_t>(i)].get<double>();
      const double tol = rel_of_max * max_abs + rel * std::abs(ref) + abs_tol;
      ASSERT_NEAR(got[static_cast<size_t>(t.offset + i)], ref, tol)
          << what << " " << name << " [" << i << "]";
    }
  }
}

TEST_F(LoraGoldenTest, LossAndEveryGradientMatchPyTorchPeft) {
  LoraParams p = Params();
  for (bool recompute : {false, true}) {
    auto tm = Train(recompute);
    std::vector<int32_t> ids, labels;
    tl::Block(0, &ids, &labels);
    std::vector<float> grads(static_cast<size_t>(p.size()), 0.0f);
    auto r = tm->ForwardBackward(p, TrainBatch{ids, labels}, 0.0f, grads);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->n_supervised, (*goldens_)["n_supervised0"].get<int64_t>());
    const double want = (*goldens_)["loss0"].get<double>();
    EXPECT_NEAR(r->mean(), want, 1e-5 * want) << "recompute " << recompute;
    ExpectTensorsNear(p, grads, (*goldens_)["grads"], 2e-5, 1e-6, 0.0,
                      recompute ? "gradient (recompute)" : "gradient");
    // The loss-only pass agrees with the training pass.
    auto l = tm->Loss(p, TrainBatch{ids, labels});
    ASSERT_TRUE(l.ok()) << l.status();
    EXPECT_DOUBLE_EQ(l->loss_sum, r->loss_sum);
  }
}

TEST_F(LoraGoldenTest, RecomputeGivesTheSameBits) {
  LoraParams p = Params();
  std::vector<int32_t> ids, labels;
  tl::Block(1, &ids, &labels);
  std::vector<float> g1(static_cast<size_t>(p.size()), 0.0f), g2 = g1;
  ASSERT_TRUE(Train(false)->ForwardBackward(p, TrainBatch{ids, labels}, 0.0f, g1).ok());
  ASSERT_TRUE(Train(true)->ForwardBackward(p, TrainBatch{ids, labels}, 0.0f, g2).ok());
  EXPECT_EQ(g1, g2);
}

TEST_F(LoraGoldenTest, TenStepTraceMatchesPyTorchAdamW) {
  LoraParams p = Params();
  auto tm = Train();
  const nlohmann::json& trace = (*goldens_)["trace"];
  LrSchedule sched;
  sched.peak_lr = 1e-2f;
  sched.warmup_steps = 2;
  sched.total_steps = 10;
  sched.decay = LrDecay::kLinear;
  AdamWOptions adamw;
  adamw.weight_decay = 0.01f;
  std::vector<int32_t> ids[2], labels[2];
  int64_t n_total = 0;
  for (int b = 0; b < 2; ++b) {
    tl::Block(b, &ids[b], &labels[b]);
    for (int32_t l : labels[b]) n_total += l != kIgnoreLabel;
  }
  const size_t n = static_cast<size_t>(p.size());
  std::vector<float> grads(n), m(n, 0.0f), v(n, 0.0f);
  for (int step = 0; step < 10; ++step) {
    std::fill(grads.begin(), grads.end(), 0.0f);
    double loss_sum = 0.0;
    for (int b = 0; b < 2; ++b) {
      auto r = tm->ForwardBackward(p, TrainBatch{ids[b], labels[b]},
                                   1.0f / static_cast<float>(n_total), grads);
      ASSERT_TRUE(r.ok()) << r.status();
      loss_sum += r->loss_sum;
    }
    const double loss = loss_sum / static_cast<double>(n_total);
    const double want_loss = trace["losses"][static_cast<size_t>(step)].get<double>();
    EXPECT_NEAR(loss, want_loss, 2e-5 * want_loss) << "step " << step;
    std::span<const float> all(grads);
    const double norm = GlobalGradNorm(std::span<const std::span<const float>>(&all, 1));
    const double want_norm = trace["grad_norms"][static_cast<size_t>(step)].get<double>();
    EXPECT_NEAR(norm, want_norm, 1e-4 * want_norm) << "step " << step;
    const float lr = sched.LrAt(step);
    EXPECT_NEAR(lr, trace["lrs"][static_cast<size_t>(step)].get<double>(), 1e-9);
    const float clip = ClipFactor(norm, 1.0f);
    for (float& g : grads) g *= clip;
    AdamWStep(adamw, step + 1, lr, p.values().data(), grads.data(), m.data(), v.data(), p.size());
  }
  ExpectTensorsNear(p, p.values(), trace["final"], 0.0, 0.0, 2e-5, "parameter after 10 steps");
}

// The adapter merged into the weights (what `--lora` does for inference) gives the same loss as the
// training forward, and as the float64 reference.
TEST_F(LoraGoldenTest, MergedModelGivesTheTrainingLoss) {
  LoraParams p = Params();
  for (const LoraTensor& t : p.tensors()) {  // trained norms that differ from the base
    if (t.kind == LoraTensor::Kind::kFfnNorm) p.values()[static_cast<size_t>(t.offset + 3)] *= 1.5f;
  }
  auto merged = MergeLora(*loaded_.model, p);
  ASSERT_TRUE(merged.ok()) << merged.status();
  auto tm = Train();
  for (int b = 0; b < 2; ++b) {
    std::vector<int32_t> ids, labels;
    tl::Block(b, &ids, &labels);
    auto want = tm->Loss(p, TrainBatch{ids, labels});
    ASSERT_TRUE(want.ok()) << want.status();
    ForwardOptions fo;
    fo.all_logits = true;
    auto r = (*merged)->Forward(ids, nullptr, fo);
    ASSERT_TRUE(r.ok()) << r.status();
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
    EXPECT_EQ(n, want->n_supervised);
    EXPECT_NEAR(sum / static_cast<double>(n), want->mean(), 1e-5 * want->mean()) << "block " << b;
  }
  // At scale 0 the LoRA matrices vanish (only the norms stay): the loss changes.
  auto zero = MergeLora(*loaded_.model, p, 0.0f);
  ASSERT_TRUE(zero.ok()) << zero.status();
  std::vector<int32_t> ids, labels;
  tl::Block(0, &ids, &labels);
  auto full = (*merged)->Forward(ids, nullptr, {});
  auto none = (*zero)->Forward(ids, nullptr, {});
  ASSERT_TRUE(full.ok() && none.ok());
  EXPECT_GT(
      std::abs(full->logits.data_as<const float>()[0] - none->logits.data_as<const float>()[0]),
      1e-3);
}

// `--lora` with `--device`: LoadModel's on_host step merges the adapter into the host weights, then
// the merged model is built on the device backend (weights copied there). On the device test
// double (a CPU backend behind device-only tensors) its logits equal the CPU merge's bit for bit;
// the step sees a host model and runs once.
TEST_F(LoraGoldenTest, MergedOnTheHostThenBuiltOnADevice) {
  const LoraParams p = Params();
  auto cpu_merged = MergeLora(*loaded_.model, p);
  ASSERT_TRUE(cpu_merged.ok()) << cpu_merged.status();
  muninn::testing::DeviceDouble device(CreateCpuBackend(CpuBackendOptions{}).value());
  int calls = 0;
  LoadModelOptions lo;
  lo.load_tokenizer = false;
  lo.on_host = [&](const Model& host) -> StatusOr<std::unique_ptr<Model>> {
    ++calls;
    EXPECT_TRUE(host.backend()->device().is_cpu());
    EXPECT_TRUE(host.weights().layers[0].wq.device().is_cpu());
    return MergeLora(host, p);
  };
  auto on_device = LoadModel(*dir_, &device, lo);
  ASSERT_TRUE(on_device.ok()) << on_device.status();
  EXPECT_EQ(calls, 1);
  Model& dm = *on_device->model;
  EXPECT_EQ(dm.backend(), &device);
  EXPECT_EQ(dm.weights().layers[1].wq.device(), Device::Cuda(0));
  EXPECT_GT(device.uploads, 0);
  std::vector<int32_t> ids, labels;
  tl::Block(1, &ids, &labels);
  ForwardOptions fo;
  fo.all_logits = true;
  auto want = (*cpu_merged)->Forward(ids, nullptr, fo);
  auto got = dm.Forward(ids, nullptr, fo);
  ASSERT_TRUE(want.ok() && got.ok()) << want.status() << " " << got.status();
  ASSERT_EQ(want->logits.numel(), got->logits.numel());
  ASSERT_TRUE(got->logits.device().is_cpu());
  for (int64_t i = 0; i < want->logits.numel(); ++i) {
    ASSERT_EQ(got->logits.data_as<const float>()[i], want->logits.data_as<const float>()[i]) << i;
  }
  // An on_host error stops the load, with its message.
  lo.on_host = [](const Model&) -> StatusOr<std::unique_ptr<Model>> {
    return InvalidArgumentError("adapter does not fit");
  };
  auto bad = LoadModel(*dir_, &device, lo);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().ToString().find("adapter does not fit"), std::string::npos);
}

// The trainer on a device (tests/retriever/device_double.h: the CUDA backend's argument rules,
// memory the host cannot read, the CPU's kernels): frozen weights, activations, LoRA parameters
// and gradients live on the device and the memory K/V are uploaded per call. Losses and every
// gradient equal the CPU's bit for bit, with memory in both query modes on every layer, memory
// gates, dropout, with and without recomputation, over two accumulated micro-batches.
TEST_F(LoraGoldenTest, TrainingOnADeviceGivesTheCpuBits) {
  LoraConfig c = tl::AdapterConfig();
  c.dropout = 0.2f;
  c.memory_gate_layers = {1, 2};
  auto p = LoraParams::Create(loaded_.model->config(), loaded_.model->weights(), c);
  ASSERT_TRUE(p.ok()) << p.status();
  tl::SetAdapterValues(&*p);
  int gates = 0;
  for (const LoraTensor& t : p->tensors()) {
    if (t.kind != LoraTensor::Kind::kMemGate) continue;
    for (int64_t i = 0; i < t.size(); ++i) {
      p->values()[static_cast<size_t>(t.offset + i)] = 0.25f * static_cast<float>(i % 3) - 0.2f;
    }
    ++gates;
  }
  ASSERT_EQ(gates, 2);
  muninn::testing::DeviceDouble device(CreateCpuBackend(CpuBackendOptions{}).value());
  LoadModelOptions lo;
  lo.load_tokenizer = false;
  auto on_device = LoadModel(*dir_, &device, lo);
  ASSERT_TRUE(on_device.ok()) << on_device.status();
  constexpr int kM = 5;
  for (bool recompute : {false, true}) {
    for (int64_t query_position : {int64_t{-1}, int64_t{40}}) {
      MemoryKV mem;
      for (int l = 0; l < tl::kLayers; ++l) {
        LayerMemoryKV lm;
        lm.k = Tensor::FromVector(Shape{kM, tl::kHeadsKv, tl::kHd},
                                  tl::Uniform(5000 + 2 * l, kM * tl::kHeadsKv * tl::kHd, 1.5))
                   .value();
        lm.v = Tensor::FromVector(Shape{kM, tl::kHeadsKv, tl::kHd},
                                  tl::Uniform(5001 + 2 * l, kM * tl::kHeadsKv * tl::kHd, 1.0))
                   .value();
        lm.query_position = query_position;
        mem.layers.push_back(lm);
      }
      TrainModelOptions o;
      o.recompute = recompute;
      auto cpu = TrainModel::Create(loaded_.model.get(), c, o);
      auto dev = TrainModel::Create(on_device->model.get(), c, o);
      ASSERT_TRUE(cpu.ok() && dev.ok()) << cpu.status() << " " << dev.status();
      std::vector<float> g_cpu(static_cast<size_t>(p->size()), 0.0f), g_dev = g_cpu;
      const int64_t uploads = device.uploads, downloads = device.downloads;
      const int64_t index_uploads = device.host_index_uploads;
      for (int block = 0; block < 2; ++block) {
        std::vector<int32_t> ids, labels;
        tl::Block(block, &ids, &labels);
        TrainBatch batch{ids, labels};
        batch.memory = block == 0 ? &mem : nullptr;
        batch.start_pos = 3 * block;
        batch.dropout_seed = 7 + static_cast<uint64_t>(block);
        auto want = (*cpu)->ForwardBackward(*p, batch, 0.05f, g_cpu);
        auto got = (*dev)->ForwardBackward(*p, batch, 0.05f, g_dev);
        ASSERT_TRUE(want.ok() && got.ok()) << want.status() << " " << got.status();
        EXPECT_EQ(got->loss_sum, want->loss_sum) << "block " << block;
        EXPECT_EQ(got->n_supervised, want->n_supervised);
        auto want_eval = (*cpu)->Loss(*p, batch);
        auto got_eval = (*dev)->Loss(*p, batch);
        ASSERT_TRUE(want_eval.ok() && got_eval.ok()) << got_eval.status();
        EXPECT_EQ(got_eval->loss_sum, want_eval->loss_sum);
        EXPECT_NE(got_eval->loss_sum, got->loss_sum) << "dropout should change the loss";
      }
      for (size_t i = 0; i < g_cpu.size(); ++i) {
        ASSERT_EQ(g_dev[i], g_cpu[i]) << "gradient " << i << " recompute " << recompute
                                      << " query_position " << query_position;
      }
      double norm = 0.0;
      for (float g : g_cpu) norm += static_cast<double>(g) * g;
      EXPECT_GT(norm, 0.0);
      // Per call: parameters, gradients, the bottom's output and the memory went up, the gradients
      // and the losses came back.
      EXPECT_GE(device.uploads - uploads, 2 * 3);
      EXPECT_GE(device.downloads - downloads, 2);
      // Host index operands (each a hidden copy on CUDA): one a call, the embedding lookup's token
      // ids; the positions go up once a call for every RoPE (memory queries add theirs).
      if (query_position < 0) {
        EXPECT_EQ(device.host_index_uploads - index_uploads, 2 * 2);
      }
    }
  }
}

// Partial offload at load (LoadModelOptions::gpu_layers, `--gpu-layers`): the top layer on the
// device, the others on the host; logits as on the CPU, with and without an adapter merged at
// load, and training on the split model gives the CPU's bits (its trained layer 1 runs on the
// device with the training ops, though the model runs it on the host).
TEST_F(LoraGoldenTest, PartialOffloadAtLoadGivesTheCpuBits) {
  muninn::testing::DeviceDouble device(CreateCpuBackend(CpuBackendOptions{}).value());
  auto host = CreateCpuBackend(CpuBackendOptions{});
  ASSERT_TRUE(host.ok());
  const LoraParams p = Params();
  std::vector<int32_t> ids, labels;
  tl::Block(1, &ids, &labels);
  ForwardOptions fo;
  fo.all_logits = true;
  for (bool merge : {false, true}) {
    LoadModelOptions lo;
    lo.load_tokenizer = false;
    lo.gpu_layers = 1;
    lo.host = host->get();
    if (merge) lo.on_host = [&](const Model& m) { return MergeLora(m, p); };
    auto split = LoadModel(*dir_, &device, lo);
    ASSERT_TRUE(split.ok()) << split.status();
    EXPECT_EQ(split->model->host_layers(), tl::kLayers - 1);
    EXPECT_TRUE(split->model->weights().layers[1].wq.device().is_cpu());
    EXPECT_EQ(split->model->weights().layers[2].wq.device(), Device::Cuda(0));
    std::unique_ptr<Model> merged;
    const Model* reference = loaded_.model.get();
    if (merge) {
      merged = MergeLora(*loaded_.model, p).value();
      reference = merged.get();
    }
    auto want = const_cast<Model*>(reference)->Forward(ids, nullptr, fo);
    auto got = split->model->Forward(ids, nullptr, fo);
    ASSERT_TRUE(want.ok() && got.ok()) << want.status() << " " << got.status();
    ASSERT_EQ(want->logits.numel(), got->logits.numel());
    EXPECT_EQ(std::memcmp(want->logits.data(), got->logits.data(), want->logits.nbytes()), 0)
        << "merge " << merge;
    if (merge) continue;
    TrainBatch batch{ids, labels};
    auto cpu = Train();
    auto dev = TrainModel::Create(split->model.get(), tl::AdapterConfig(), {});
    ASSERT_TRUE(dev.ok()) << dev.status();
    std::vector<float> g_cpu(static_cast<size_t>(p.size()), 0.0f), g_dev = g_cpu;
    auto lc = cpu->ForwardBackward(p, batch, 0.0f, g_cpu);
    auto ld = (*dev)->ForwardBackward(p, batch, 0.0f, g_dev);
    ASSERT_TRUE(lc.ok() && ld.ok()) << lc.status() << " " << ld.status();
    EXPECT_EQ(ld->loss_sum, lc->loss_sum);
    EXPECT_EQ(g_dev, g_cpu);
  }
  // No layer on the device is refused; as many as the model has (or more) is no split.
  LoadModelOptions lo;
  lo.load_tokenizer = false;
  lo.host = host->get();
  lo.gpu_layers = 0;
  auto none = LoadModel(*dir_, &device, lo);
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument) << none.status();
  EXPECT_NE(none.status().ToString().find("--device cpu"), std::string::npos) << none.status();
  lo.gpu_layers = 99;
  auto all = LoadModel(*dir_, &device, lo);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->model->host_layers(), 0);
  lo.gpu_layers = 1;
  lo.host = nullptr;
  EXPECT_EQ(LoadModel(*dir_, &device, lo).status().code(), StatusCode::kInvalidArgument);
  lo.host = host->get();
  lo.gpu_layers = -2;
  EXPECT_EQ(LoadModel(*dir_, &device, lo).status().code(), StatusCode::kInvalidArgument);
  lo.gpu_layers = 1;  // on the CPU backend there is nothing to split
  auto on_cpu = LoadModel(*dir_, backend_.get(), lo);
  EXPECT_EQ(on_cpu.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(on_cpu.status().ToString().find("--device cuda"), std::string::npos) << on_cpu.status();
}

// The same training on a real CUDA device (label gpu; skips without one): loss and gradients
// within float rounding of the CPU's (cuBLAS and the device's exp/log against OpenBLAS and libm).
TEST_F(LoraGoldenTest, TrainingOnCudaMatchesTheCpuGpu) {
#if !defined(MUNINN_HAVE_CUDA)
  GTEST_SKIP() << "muninn was built with MUNINN_CUDA=OFF";
#else
  if (CudaDeviceCount() == 0) {
    GTEST_SKIP() << "no CUDA device present: " << CreateCudaBackend({}).status();
  }
  auto cuda = CreateCudaBackend({});
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  LoraConfig c = tl::AdapterConfig();
  c.dropout = 0.1f;
  c.memory_gate_layers = {1, 2};
  auto p = LoraParams::Create(loaded_.model->config(), loaded_.model->weights(), c);
  ASSERT_TRUE(p.ok()) << p.status();
  tl::SetAdapterValues(&*p);
  LoadModelOptions lo;
  lo.load_tokenizer = false;
  auto on_gpu = LoadModel(*dir_, cuda->get(), lo);
  ASSERT_TRUE(on_gpu.ok()) << on_gpu.status();
  MemoryKV mem;
  for (int l = 0; l < tl::kLayers; ++l) {
    LayerMemoryKV lm;
    lm.k = Tensor::FromVector(Shape{6, tl::kHeadsKv, tl::kHd},
                              tl::Uniform(6000 + 2 * l, 6 * tl::kHeadsKv * tl::kHd, 1.5))
               .value();
    lm.v = Tensor::FromVector(Shape{6, tl::kHeadsKv, tl::kHd},
                              tl::Uniform(6001 + 2 * l, 6 * tl::kHeadsKv * tl::kHd, 1.0))
               .value();
    lm.query_position = l == 2 ? 40 : -1;
    mem.layers.push_back(lm);
  }
  auto cpu = TrainModel::Create(loaded_.model.get(), c, {});
  auto gpu = TrainModel::Create(on_gpu->model.get(), c, {});
  ASSERT_TRUE(cpu.ok() && gpu.ok()) << cpu.status() << " " << gpu.status();
  std::vector<float> g_cpu(static_cast<size_t>(p->size()), 0.0f), g_gpu = g_cpu;
  std::vector<int32_t> ids, labels;
  tl::Block(0, &ids, &labels);
  TrainBatch batch{ids, labels};
  batch.memory = &mem;
  batch.dropout_seed = 5;
  auto want = (*cpu)->ForwardBackward(*p, batch, 0.0f, g_cpu);
  auto got = (*gpu)->ForwardBackward(*p, batch, 0.0f, g_gpu);
  ASSERT_TRUE(want.ok() && got.ok()) << want.status() << " " << got.status();
  EXPECT_NEAR(got->loss_sum, want->loss_sum, 1e-5 * std::abs(want->loss_sum));
  double max_g = 0.0, max_err = 0.0;
  for (size_t i = 0; i < g_cpu.size(); ++i) {
    max_g = std::max(max_g, std::abs(static_cast<double>(g_cpu[i])));
    max_err = std::max(max_err, std::abs(static_cast<double>(g_gpu[i]) - g_cpu[i]));
  }
  EXPECT_LE(max_err, 1e-4 * max_g) << "largest gradient " << max_g;
#endif
}

// LoRA dropout (which PyTorch cannot be compared with: other masks): with dropout 0.3 the
// largest gradient elements of each kind of tensor (A, B, norms) equal central finite differences
// of the training loss (same seed, so the same masks), with and without recomputation; another
// seed gives another loss.
TEST_F(LoraGoldenTest, DropoutGradientMatchesFiniteDifferences) {
  LoraConfig c = tl::AdapterConfig();
  c.dropout = 0.3f;
  auto p = LoraParams::Create(loaded_.model->config(), loaded_.model->weights(), c);
  ASSERT_TRUE(p.ok());
  tl::SetAdapterValues(&*p);
  std::vector<int32_t> ids, labels;
  tl::Block(1, &ids, &labels);
  TrainBatch batch{ids, labels};
  batch.dropout_seed = 99;
  for (bool recompute : {false, true}) {
    TrainModelOptions o;
    o.recompute = recompute;
    auto tm = TrainModel::Create(loaded_.model.get(), c, o);
    ASSERT_TRUE(tm.ok()) << tm.status();
    std::vector<float> grads(static_cast<size_t>(p->size()), 0.0f);
    auto r = (*tm)->ForwardBackward(*p, batch, 0.0f, grads);
    ASSERT_TRUE(r.ok()) << r.status();
    // Per kind of tensor (A, B, norms), the 4 elements with the largest gradient one by one: a
    // directional check along the gradient itself would not see an error uncorrelated with it.
    // f32 losses (~1e-6 relative of ~7) over 2h = 2e-2 leave ~5e-4 absolute: 3 % + 1e-3.
    std::vector<float> scratch(grads.size());
    for (LoraTensor::Kind kind :
         {LoraTensor::Kind::kLoraA, LoraTensor::Kind::kLoraB, LoraTensor::Kind::kAttnNorm}) {
      std::vector<int64_t> idx;
      for (const LoraTensor& t : p->tensors()) {
        const bool norm_kind =
            t.kind == LoraTensor::Kind::kAttnNorm || t.kind == LoraTensor::Kind::kFfnNorm;
        if (!(t.kind == kind || (kind == LoraTensor::Kind::kAttnNorm && norm_kind))) continue;
        for (int64_t i = t.offset; i < t.offset + t.size(); ++i) idx.push_back(i);
      }
      std::partial_sort(idx.begin(), idx.begin() + 4, idx.end(), [&](int64_t x, int64_t y) {
        return std::abs(grads[static_cast<size_t>(x)]) > std::abs(grads[static_cast<size_t>(y)]);
      });
      for (int k = 0; k < 4; ++k) {
        const auto i = static_cast<size_t>(idx[static_cast<size_t>(k)]);
        const float h = 1e-2f;
        double loss_at[2];
        for (int sgn = 0; sgn < 2; ++sgn) {
          LoraParams q = *p;
          q.values()[i] += sgn == 0 ? h : -h;
          auto l = (*tm)->ForwardBackward(q, batch, 0.0f, scratch);
          ASSERT_TRUE(l.ok());
          loss_at[sgn] = l->mean();
        }
        const double fd = (loss_at[0] - loss_at[1]) / (2.0 * h);
        EXPECT_NEAR(fd, grads[i], 3e-2 * std::abs(grads[i]) + 1e-3)
            << "recompute " << recompute << " element " << i;
      }
    }
    TrainBatch other = batch;
    other.dropout_seed = 100;
    auto lo = (*tm)->ForwardBackward(*p, other, 0.0f, scratch);
    ASSERT_TRUE(lo.ok());
    EXPECT_NE(lo->loss_sum, r->loss_sum);
  }
}

// Retrieved memory K/V ([memory ; local] attention, both query modes) on a frozen layer (0) and
// both trained layers: the training forward's loss equals the inference forward's with the adapter
// merged, and the gradient agrees with a central finite difference of the f32 loss along it.
TEST_F(LoraGoldenTest, MemoryBlockMatchesInferenceAndFiniteDifferences) {
  LoraParams p = Params();
  auto merged = MergeLora(*loaded_.model, p);
  ASSERT_TRUE(merged.ok()) << merged.status();
  auto tm = Train();
  constexpr int kM = 7;
  for (int64_t query_position : {int64_t{-1}, int64_t{30}}) {
    MemoryKV mem;
    for (int l = 0; l < tl::kLayers; ++l) {
      LayerMemoryKV lm;
      auto k = Tensor::FromVector(Shape{kM, tl::kHeadsKv, tl::kHd},
                                  tl::Uniform(4000 + 2 * l, kM * tl::kHeadsKv * tl::kHd, 1.5));
      auto v = Tensor::FromVector(Shape{kM, tl::kHeadsKv, tl::kHd},
                                  tl::Uniform(4001 + 2 * l, kM * tl::kHeadsKv * tl::kHd, 1.0));
      ASSERT_TRUE(k.ok() && v.ok());
      lm.k = *k;
      lm.v = *v;
      lm.query_position = query_position;
      mem.layers.push_back(lm);
    }
    std::vector<int32_t> ids, labels;
    tl::Block(0, &ids, &labels);
    TrainBatch batch{ids, labels};
    batch.memory = &mem;
    batch.start_pos = 5;
    std::vector<float> grads(static_cast<size_t>(p.size()), 0.0f);
    auto r = tm->ForwardBackward(p, batch, 0.0f, grads);
    ASSERT_TRUE(r.ok()) << r.status();
    auto plain = tm->Loss(p, TrainBatch{ids, labels});
    ASSERT_TRUE(plain.ok());
    EXPECT_GT(std::abs(plain->mean() - r->mean()), 1e-3) << "the memory changes nothing";
    ForwardOptions fo;
    fo.all_logits = true;
    fo.memory = &mem;
    fo.start_pos = 5;
    auto inf = (*merged)->Forward(ids, nullptr, fo);
    ASSERT_TRUE(inf.ok()) << inf.status();
    double sum = 0.0;
    for (size_t t = 0; t < ids.size(); ++t) {
      if (labels[t] == kIgnoreLabel) continue;
      const float* row = inf->logits.data_as<const float>() + t * tl::kVocab;
      double mx = row[0], z = 0.0;
      for (int v = 0; v < tl::kVocab; ++v) mx = std::max(mx, static_cast<double>(row[v]));
      for (int v = 0; v < tl::kVocab; ++v) z += std::exp(row[v] - mx);
      sum += mx + std::log(z) - row[labels[t]];
    }
    EXPECT_NEAR(sum / static_cast<double>(r->n_supervised), r->mean(), 1e-5 * r->mean())
        << "query_position " << query_position;
    // Directional derivative along the gradient: (L(p + h·u) - L(p - h·u)) / 2h = |g| for
    // u = g / |g|. f32 losses (~1e-6 relative) and h = 1e-2 leave ~1e-3 of |g|; 1 % tolerance.
    // Then the 8 largest gradient elements one by one (3 % + 1e-3), which also see errors
    // uncorrelated with the gradient.
    double norm = 0.0;
    for (float g : grads) norm += static_cast<double>(g) * g;
    norm = std::sqrt(norm);
    const double h = 1e-2;
    double loss_at[2];
    for (int sgn = 0; sgn < 2; ++sgn) {
      LoraParams q = p;
      for (size_t i = 0; i < grads.size(); ++i) {
        q.values()[i] += static_cast<float>((sgn == 0 ? h : -h) * grads[i] / norm);
      }
      auto l = tm->Loss(q, batch);
      ASSERT_TRUE(l.ok());
      loss_at[sgn] = l->mean();
    }
    EXPECT_NEAR((loss_at[0] - loss_at[1]) / (2 * h), norm, 1e-2 * norm)
        << "query_position " << query_position;
    std::vector<size_t> idx(grads.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::partial_sort(idx.begin(), idx.begin() + 8, idx.end(),
                      [&](size_t x, size_t y) { return std::abs(grads[x]) > std::abs(grads[y]); });
    for (int k = 0; k < 8; ++k) {
      const size_t i = idx[static_cast<size_t>(k)];
      for (int sgn = 0; sgn < 2; ++sgn) {
        LoraParams q = p;
        q.values()[i] += sgn == 0 ? 1e-2f : -1e-2f;
        auto l = tm->Loss(q, batch);
        ASSERT_TRUE(l.ok());
        loss_at[sgn] = l->mean();
      }
      EXPECT_NEAR((loss_at[0] - loss_at[1]) / 2e-2, grads[i], 3e-2 * std::abs(grads[i]) + 1e-3)
          << "query_position " << query_position << " element " << i;
    }
  }
}

}  // namespace
}  // namespace muninn::model
