// The trainer on the tiny random llama of tiny_lora_llama.h: data cut into blocks at document
// boundaries, resume after an interruption gives the same adapter bytes as an uninterrupted run,
// divergence stops with a clear error keeping the last checkpoint, bad configurations and data are
// refused, and the PEFT folder round-trips. With MUNINN_LORA_EXPORT_DIR set, the exported folder
// (with muninn's losses in muninn_check.json) is left there for
// `tools/reference/make_lora_goldens.py --check-adapter DIR` (PEFT loads it and compares).
#include "muninn/model/trainer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "muninn/core/cpu_backend.h"
#include "muninn/model/gguf_file.h"
#include "muninn/model/lora_gguf.h"
#include "muninn/model/lora_merge.h"
#include "muninn/model/memory_kv.h"
#include "muninn/model/model_loader.h"
#include "muninn/model/peft_adapter.h"
#include "muninn/model/train_data.h"
#include "muninn/model/train_memory.h"
#include "tests/model/tiny_lora_llama.h"
#include "tests/retriever/device_double.h"

namespace muninn::model {
namespace {

namespace tl = tiny_lora;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(::testing::TempDir() + "/muninn_trainer_" + std::to_string(::getpid()));
    tl::WriteModel(*root_ + "/model");
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    std::filesystem::remove_all(*root_, ec);
    delete root_;
  }
  void SetUp() override {
    auto b = CreateCpuBackend(CpuBackendOptions{});
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = std::move(b).value();
    LoadModelOptions lo;
    lo.load_tokenizer = false;
    auto m = LoadModel(*root_ + "/model", backend_.get(), lo);
    ASSERT_TRUE(m.ok()) << m.status();
    loaded_ = std::move(m).value();
    // Three documents of 41, 23 and 57 tokens from the generator's streams 3000..3002.
    std::vector<std::vector<TokenId>> docs;
    const int lens[] = {41, 23, 57};
    for (int d = 0; d < 3; ++d) {
      std::vector<TokenId> doc;
      for (int i = 0; i < lens[d]; ++i) {
        doc.push_back(static_cast<TokenId>(
            tl::Raw(3000 + static_cast<uint64_t>(d), static_cast<uint64_t>(i)) % tl::kVocab));
      }
      docs.push_back(doc);
    }
    auto data = TrainData::FromDocuments(docs, tl::kVocab, 16);
    ASSERT_TRUE(data.ok()) << data.status();
    data_ = std::make_unique<TrainData>(std::move(data).value());
  }
  TrainerOptions Options(const std::string& name) {
    TrainerOptions o;
    o.lora = tl::AdapterConfig();
    o.lora.dropout = 0.1f;  // exercises the dropout masks' seeding across a resume
    o.steps = 6;
    o.grad_accum = 2;
    o.lr = 1e-2f;
    o.warmup_steps = 2;
    o.adamw.weight_decay = 0.01f;
    o.seed = 7;
    o.out_dir = *root_ + "/" + name;
    o.base_model_name = "tiny";
    return o;
  }
  Model* model() { return loaded_.model.get(); }
  // The tiny model written as a llama GGUF file at `path` and loaded from it (no tokenizer).
  StatusOr<LoadedModel> WriteAndLoadGguf(const std::string& path) {
    tl::WriteGgufModel(path);
    LoadModelOptions lo;
    lo.load_tokenizer = false;
    return LoadModel(path, backend_.get(), lo);
  }

  static std::string* root_;
  std::unique_ptr<Backend> backend_;
  LoadedModel loaded_;
  std::unique_ptr<TrainData> data_;
};
std::string* TrainerTest::root_ = nullptr;

TEST(TrainDataTest, BlocksStayInsideDocuments) {
  std::vector<std::vector<TokenId>> docs = {{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {10, 11, 12}, {20}};
  auto d = TrainData::FromDocuments(docs, 100, 4);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->n_blocks(), 4);
  EXPECT_EQ(d->n_documents(), 3);
  EXPECT_EQ(d->n_tokens(), 4 + 4 + 1 + 2);
  auto v = [](std::span<const TokenId> s) { return std::vector<TokenId>(s.begin(), s.end()); };
  EXPECT_EQ(v(d->ids(0)), (std::vector<TokenId>{0, 1, 2, 3}));
  EXPECT_EQ(v(d->labels(0)), (std::vector<TokenId>{1, 2, 3, 4}));
  EXPECT_EQ(v(d->ids(2)), (std::vector<TokenId>{8}));
  EXPECT_EQ(v(d->labels(2)), (std::vector<TokenId>{9}));
  EXPECT_EQ(v(d->ids(3)), (std::vector<TokenId>{10, 11}));
  EXPECT_EQ(v(d->labels(3)), (std::vector<TokenId>{11, 12}));
  EXPECT_FALSE(TrainData::FromDocuments({{5}}, 100, 4).ok());
  EXPECT_FALSE(TrainData::FromDocuments({{5, 100}}, 100, 4).ok());
}

TEST(TrainDataTest, ReadsJsonlIdsAndRefusesBadLines) {
  const std::string dir = ::testing::TempDir() + "/muninn_train_data_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/ok.jsonl") << "{\"ids\": [1, 2, 3]}\n\n{\"ids\": [4, 5]}\n";
  auto d = TrainData::Load({dir + "/ok.jsonl"}, nullptr, 10, 8);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->n_blocks(), 2);
  EXPECT_EQ(d->n_documents(), 2);
  std::ofstream(dir + "/bad.jsonl") << "{\"ids\": [1, 2]}\n{\"id\": [1]}\n";
  auto bad = TrainData::Load({dir + "/bad.jsonl"}, nullptr, 10, 8);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().ToString().find("bad.jsonl:2"), std::string::npos) << bad.status();
  std::ofstream(dir + "/text.jsonl") << "{\"text\": \"hello\"}\n";
  auto text = TrainData::Load({dir + "/text.jsonl"}, nullptr, 10, 8);
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.status().ToString().find("no tokenizer"), std::string::npos) << text.status();
  EXPECT_EQ(TrainData::Load({dir + "/missing.txt"}, nullptr, 10, 8).status().code(),
            StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

TEST(TrainDataTest, LabeledBlocksKeepTheirOwnLabels) {
  auto d = TrainData::FromLabeledBlocks({{5, 6, 7, 8}, {9, 10}},
                                        {{kIgnoreLabel, kIgnoreLabel, 8, 11}, {kIgnoreLabel, 3}}, 64);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->n_blocks(), 2);
  EXPECT_EQ(d->n_tokens(), 3);  // supervised positions
  EXPECT_EQ(std::vector<TokenId>(d->ids(0).begin(), d->ids(0).end()), (std::vector<TokenId>{5, 6, 7, 8}));
  EXPECT_EQ(std::vector<TokenId>(d->labels(0).begin(), d->labels(0).end()),
            (std::vector<TokenId>{kIgnoreLabel, kIgnoreLabel, 8, 11}));
  EXPECT_EQ(std::vector<TokenId>(d->labels(1).begin(), d->labels(1).end()),
            (std::vector<TokenId>{kIgnoreLabel, 3}));
  // Documents keep the shifted labels, the last position of a document predicting nothing.
  auto docs = TrainData::FromDocuments({{1, 2, 3}}, 64, 8);
  ASSERT_TRUE(docs.ok());
  EXPECT_EQ(std::vector<TokenId>(docs->labels(0).begin(), docs->labels(0).end()),
            (std::vector<TokenId>{2, 3}));
  // Refused: mismatched lengths, nothing supervised, ids or labels outside the vocabulary.
  EXPECT_EQ(TrainData::FromLabeledBlocks({{1, 2}}, {{2}}, 64).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(TrainData::FromLabeledBlocks({{1, 2}}, {{kIgnoreLabel, kIgnoreLabel}}, 64).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(TrainData::FromLabeledBlocks({{1, 99}}, {{2, 3}}, 64).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(TrainData::FromLabeledBlocks({{1, 2}}, {{2, 64}}, 64).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(TrainData::FromLabeledBlocks({}, {}, 64).status().code(), StatusCode::kInvalidArgument);
}

// A memory source that hands every block the same random memory on the trained layers and logs
// the calls.
class FakeMemory final : public TrainMemorySource {
 public:
  explicit FakeMemory(std::string name) : name_(std::move(name)) {
    for (int l = tl::kFirstLayer; l < tl::kLayers; ++l) {
      Tensor k = *Tensor::Empty(DType::kF32, {7, tl::kHeadsKv, tl::kHd});
      Tensor v = *Tensor::Empty(DType::kF32, {7, tl::kHeadsKv, tl::kHd});
      for (int64_t i = 0; i < k.numel(); ++i) {
        k.data_as<float>()[i] = 0.5f * static_cast<float>((i * 37 + l) % 11) - 2.5f;
        v.data_as<float>()[i] = 0.3f * static_cast<float>((i * 13 + l) % 7) - 0.9f;
      }
      if (mem_.layers.size() <= static_cast<size_t>(l)) mem_.layers.resize(static_cast<size_t>(l) + 1);
      mem_.layers[static_cast<size_t>(l)] = LayerMemoryKV{k, v};
    }
  }
  StatusOr<const MemoryKV*> Before(TrainUse use, int32_t stream, int64_t block,
                                   int64_t step) override {
    log.push_back((use == TrainUse::kTrain ? "B" : "E") + std::to_string(stream) + ":" +
                  std::to_string(block) + "@" + std::to_string(step));
    return on ? &mem_ : nullptr;
  }
  Status After(TrainUse use, int32_t stream, int64_t block) override {
    log.push_back((use == TrainUse::kTrain ? "a" : "e") + std::to_string(stream) + ":" +
                  std::to_string(block));
    return Status::Ok();
  }
  Status Restore(std::span<const TrainStreamPosition> streams, int64_t step) override {
    std::string r = "R";
    for (const TrainStreamPosition& p : streams) {
      r += std::to_string(p.stream) + ":" + std::to_string(p.first_block) + "-" +
           std::to_string(p.next_block) + ",";
    }
    log.push_back(r + "@" + std::to_string(step));
    return Status::Ok();
  }
  std::string Describe() const override { return "{\"fake\":\"" + name_ + "\"}"; }
  std::vector<std::string> log;
  bool on = true;

 private:
  std::string name_;
  MemoryKV mem_;
};

TEST_F(TrainerTest, MemorySourceFeedsEveryBlockAndJoinsTheRunDescription) {
  TrainerOptions o = Options("memory");
  o.steps = 2;
  o.eval_every = 2;
  FakeMemory mem("a");
  o.memory = &mem;
  auto eval = TrainData::FromDocuments({{3, 1, 4, 1, 5}}, tl::kVocab, 16);
  ASSERT_TRUE(eval.ok());
  auto t = Trainer::Create(model(), data_.get(), o, &*eval);
  ASSERT_TRUE(t.ok()) << t.status();
  std::vector<double> losses;
  ASSERT_TRUE((*t)->Run([&](const StepReport& r) { losses.push_back(r.loss); }).ok());
  // Restore first, then Before/After around every micro-batch (2 per step), the held-out block
  // after the last step.
  EXPECT_EQ(mem.log, (std::vector<std::string>{"R0:0-0,@0", "B0:0@0", "a0:0", "B0:1@0", "a0:1",
                                               "B0:2@1", "a0:2", "B0:3@1", "a0:3", "E0:0@2",
                                               "e0:0"}));
  // The memory changes what the model computes: the same run without it gives another loss.
  TrainerOptions p = Options("memory_off");
  p.steps = 2;
  FakeMemory off("a");
  off.on = false;
  p.memory = &off;
  auto t2 = Trainer::Create(model(), data_.get(), p);
  ASSERT_TRUE(t2.ok()) << t2.status();
  std::vector<double> losses_off;
  ASSERT_TRUE((*t2)->Run([&](const StepReport& r) { losses_off.push_back(r.loss); }).ok());
  ASSERT_EQ(losses.size(), 2u);
  ASSERT_EQ(losses_off.size(), 2u);
  EXPECT_NE(losses[0], losses_off[0]);
  // Resuming restores the source at the checkpoint's cursor and step; other memory settings are
  // refused.
  o.resume = true;
  o.steps = 2;
  FakeMemory same("a");
  o.memory = &same;
  auto r = Trainer::Create(model(), data_.get(), o, &*eval);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE((*r)->Run().ok());
  EXPECT_EQ(same.log, (std::vector<std::string>{"R0:0-4,@2"}));
  FakeMemory other("b");
  o.memory = &other;
  EXPECT_EQ(Trainer::Create(model(), data_.get(), o, &*eval).status().code(),
            StatusCode::kFailedPrecondition);
}

// Memory gates (LoraConfig::memory_gate_layers) with memory from a FakeMemory: they move at their
// own rate (--gate-lr) without weight decay, the checkpoint (version 3) resumes them bit for bit,
// and a resume that drops them is refused.
TEST_F(TrainerTest, MemoryGatesTrainWithoutWeightDecayAndResume) {
  auto gated = [&](const std::string& name, float wd) {
    TrainerOptions o = Options(name);
    o.lora.memory_gate_layers = {1, 2};
    o.steps = 3;
    o.checkpoint_every = 1;
    // LoRA barely moves (lr 1e-30: below the float resolution of its values), the gates do; so
    // two runs that differ only in weight decay must give the same gates.
    o.lr = 1e-30f;
    o.gate_lr = 1e-2f;
    o.adamw.weight_decay = wd;
    return o;
  };
  FakeMemory mem_a("a"), mem_b("a"), mem_c("a"), mem_d("a");
  TrainerOptions a = gated("gates_wd", 0.9f);
  a.memory = &mem_a;
  auto ta = Trainer::Create(model(), data_.get(), a);
  ASSERT_TRUE(ta.ok()) << ta.status();
  ASSERT_TRUE((*ta)->Run().ok());
  const LoraParams& pa = (*ta)->params();
  ASSERT_EQ(pa.size() - pa.gates_offset(), 2 * tl::kHeads);
  float max_gate = 0.0f;
  for (int64_t i = pa.gates_offset(); i < pa.size(); ++i) {
    max_gate = std::max(max_gate, std::abs(pa.values()[static_cast<size_t>(i)]));
  }
  EXPECT_GT(max_gate, 1e-3f);
  EXPECT_LE(max_gate, 3 * 1e-2f);  // three AdamW steps of at most ~gate_lr each
  TrainerOptions b = gated("gates_nowd", 0.0f);
  b.memory = &mem_b;
  auto tb = Trainer::Create(model(), data_.get(), b);
  ASSERT_TRUE(tb.ok()) << tb.status();
  ASSERT_TRUE((*tb)->Run().ok());
  const LoraParams& pb = (*tb)->params();
  for (int64_t i = pa.gates_offset(); i < pa.size(); ++i) {
    EXPECT_EQ(pa.values()[static_cast<size_t>(i)], pb.values()[static_cast<size_t>(i)])
        << "weight decay reached gate element " << i - pa.gates_offset();
  }
  const std::string ckpt = ReadAll(a.out_dir + "/checkpoint.bin");
  ASSERT_GT(ckpt.size(), 12u);
  EXPECT_EQ(static_cast<uint8_t>(ckpt[8]), 3);  // version 3: the arena ends with gates
  EXPECT_TRUE(std::filesystem::exists(a.out_dir + "/adapter/memory_gates.safetensors"));
  // Interrupted after 1 step, resumed from its checkpoint: the same bytes as the full run.
  TrainerOptions c = gated("gates_resume", 0.9f);
  c.memory = &mem_c;
  auto tc = Trainer::Create(model(), data_.get(), c);
  ASSERT_TRUE(tc.ok()) << tc.status();
  (*tc)->StopAfter(1);
  ASSERT_TRUE((*tc)->Run().ok());
  c.resume = true;
  c.memory = &mem_d;
  auto td = Trainer::Create(model(), data_.get(), c);
  ASSERT_TRUE(td.ok()) << td.status();
  ASSERT_TRUE((*td)->Run().ok());
  EXPECT_EQ(ReadAll(c.out_dir + "/checkpoint.bin"), ckpt);
  EXPECT_EQ(ReadAll(c.out_dir + "/adapter/memory_gates.safetensors"),
            ReadAll(a.out_dir + "/adapter/memory_gates.safetensors"));
  // Resuming it without gates is another run.
  c.lora.memory_gate_layers.clear();
  FakeMemory mem_e("a");
  c.memory = &mem_e;
  EXPECT_EQ(Trainer::Create(model(), data_.get(), c).status().code(),
            StatusCode::kFailedPrecondition);
  // Bad gate learning rates are refused.
  TrainerOptions bad = gated("gates_bad", 0.0f);
  bad.gate_lr = -1.0f;
  EXPECT_EQ(Trainer::Create(model(), data_.get(), bad).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(TrainerTest, ResumeAfterInterruptionGivesIdenticalAdapterBytes) {
  // Uninterrupted: 6 steps.
  TrainerOptions a = Options("full");
  auto ta = Trainer::Create(model(), data_.get(), a);
  ASSERT_TRUE(ta.ok()) << ta.status();
  std::vector<double> losses;
  ASSERT_TRUE((*ta)->Run([&](const StepReport& r) { losses.push_back(r.loss); }).ok());
  ASSERT_EQ(losses.size(), 6u);
  EXPECT_LT(losses.back(), losses.front());  // it learns
  // Interrupted: checkpoints every 2 steps, stopped after 5 (step 5 is lost), resumed from 4.
  TrainerOptions b = Options("resumed");
  b.checkpoint_every = 2;
  {
    auto tb = Trainer::Create(model(), data_.get(), b);
    ASSERT_TRUE(tb.ok()) << tb.status();
    (*tb)->StopAfter(5);
    ASSERT_TRUE((*tb)->Run().ok());
    EXPECT_EQ((*tb)->step(), 5);
  }
  b.resume = true;
  auto tb = Trainer::Create(model(), data_.get(), b);
  ASSERT_TRUE(tb.ok()) << tb.status();
  EXPECT_EQ((*tb)->step(), 4);
  ASSERT_TRUE((*tb)->Run().ok());
  EXPECT_EQ((*tb)->step(), 6);
  const std::string bytes_a = ReadAll(a.out_dir + "/adapter/adapter_model.safetensors");
  ASSERT_FALSE(bytes_a.empty());
  EXPECT_EQ(bytes_a, ReadAll(b.out_dir + "/adapter/adapter_model.safetensors"));
  EXPECT_EQ(ReadAll(a.out_dir + "/checkpoint.bin"), ReadAll(b.out_dir + "/checkpoint.bin"));
  // A fresh run into a folder with a checkpoint is refused; a resume with other settings too.
  auto again = Trainer::Create(model(), data_.get(), Options("full"));
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists) << again.status();
  TrainerOptions other = Options("full");
  other.resume = true;
  other.lora.rank = 2;
  auto mismatch = Trainer::Create(model(), data_.get(), other);
  EXPECT_EQ(mismatch.status().code(), StatusCode::kFailedPrecondition) << mismatch.status();
  TrainerOptions none = Options("nothing_here");
  none.resume = true;
  EXPECT_EQ(Trainer::Create(model(), data_.get(), none).status().code(), StatusCode::kNotFound);
}

// The whole trainer with the model on a device (tests/retriever/device_double.h: memory the host
// cannot read, the CUDA backend's argument rules, the CPU's kernels): parameters are made from the
// model's norms, trained with memory and gates (and the bottom cache), checkpointed and written as
// a PEFT folder, and the adapter and checkpoint bytes equal a CPU run's.
TEST_F(TrainerTest, TrainsOnADeviceLikeOnTheCpu) {
  muninn::testing::DeviceDouble device(CreateCpuBackend(CpuBackendOptions{}).value());
  LoadModelOptions lo;
  lo.load_tokenizer = false;
  auto on_device = LoadModel(*root_ + "/model", &device, lo);
  ASSERT_TRUE(on_device.ok()) << on_device.status();
  ASSERT_EQ(on_device->model->weights().layers[1].attn_norm.device(), Device::Cuda(0));
  FakeMemory mem_cpu("a"), mem_dev("a");
  std::string dirs[2];
  for (int d = 0; d < 2; ++d) {
    TrainerOptions o = Options(d == 0 ? "on_cpu" : "on_device");
    o.lora.memory_gate_layers = {1, 2};
    o.steps = 3;
    o.memory = d == 0 ? &mem_cpu : &mem_dev;
    // On the device, also the bottom cache (it fingerprints the device's weights).
    if (d == 1) o.model.bottom_cache_dir = o.out_dir + "_bottom";
    auto t = Trainer::Create(d == 0 ? model() : on_device->model.get(), data_.get(), o);
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_TRUE((*t)->Run().ok());
    dirs[d] = o.out_dir;
  }
  for (const char* f : {"/adapter/adapter_model.safetensors", "/adapter/memory_gates.safetensors",
                        "/checkpoint.bin"}) {
    const std::string want = ReadAll(dirs[0] + f);
    ASSERT_FALSE(want.empty()) << f;
    EXPECT_EQ(ReadAll(dirs[1] + f), want) << f;
  }
  EXPECT_GT(device.uploads, 0);
  EXPECT_FALSE(std::filesystem::is_empty(dirs[1] + "_bottom"));
}

// The bottom cache (`--bottom-cache`): a run whose blocks come again (12 blocks of 9 here) reads
// the frozen layers' output back and ends with the adapter bytes of a run without the cache; a
// second run over the same folder reads every block; damaged files are recomputed and rewritten.
TEST_F(TrainerTest, BottomCacheGivesTheSameAdapterAndRecomputesBadFiles) {
  TrainerOptions a = Options("no_cache");
  auto ta = Trainer::Create(model(), data_.get(), a);
  ASSERT_TRUE(ta.ok()) << ta.status();
  ASSERT_TRUE((*ta)->Run().ok());
  const std::string want = ReadAll(a.out_dir + "/adapter/adapter_model.safetensors");
  ASSERT_FALSE(want.empty());
  const std::string dir = *root_ + "/bottom_cache";
  auto run = [&](const std::string& name) {
    TrainerOptions o = Options(name);
    o.model.bottom_cache_dir = dir;
    auto t = Trainer::Create(model(), data_.get(), o);
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return BottomCacheCounts{};
    EXPECT_TRUE((*t)->Run().ok());
    EXPECT_EQ(ReadAll(o.out_dir + "/adapter/adapter_model.safetensors"), want) << name;
    return (*t)->bottom_cache_stats();
  };
  BottomCacheCounts c = run("cache_1");
  EXPECT_EQ(c.misses, 9);
  EXPECT_EQ(c.hits, 3);
  EXPECT_EQ(c.rejected + c.skipped, 0);
  c = run("cache_2");
  EXPECT_EQ(c.hits, 12);
  EXPECT_EQ(c.misses + c.rejected, 0);
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  ASSERT_EQ(files.size(), 9u);
  std::filesystem::resize_file(files[0], 100);  // torn
  {
    std::fstream f(files[1], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');  // one value changed
  }
  c = run("cache_3");
  EXPECT_EQ(c.rejected, 2);
  EXPECT_EQ(c.hits, 10);
  EXPECT_EQ(c.misses, 0);
  c = run("cache_4");  // rewritten: every block reads again
  EXPECT_EQ(c.hits, 12);
  EXPECT_EQ(c.write_errors, 0);
  // Another block's intact file under this block's name (what a key collision would leave) is
  // not used: the stored ids differ.
  std::filesystem::copy_file(files[2], files[3], std::filesystem::copy_options::overwrite_existing);
  c = run("cache_5");
  EXPECT_EQ(c.rejected, 1);
  EXPECT_EQ(c.hits, 11);
  // A folder that cannot be written any more (a file in its place) does not stop the run: the
  // blocks are computed, counted as not stored, and the adapter is the same.
  const std::string gone = *root_ + "/bottom_cache_gone";
  TrainerOptions o = Options("cache_gone");
  o.model.bottom_cache_dir = gone;
  auto t = Trainer::Create(model(), data_.get(), o);
  ASSERT_TRUE(t.ok()) << t.status();
  std::filesystem::remove_all(gone);
  std::ofstream(gone) << "not a folder";
  ASSERT_TRUE((*t)->Run().ok());
  EXPECT_EQ(ReadAll(o.out_dir + "/adapter/adapter_model.safetensors"), want);
  c = (*t)->bottom_cache_stats();
  EXPECT_EQ(c.write_errors, 12);
  EXPECT_NE(c.first_write_error.find("bottom cache"), std::string::npos) << c.first_write_error;
}

// Entries belong to the kernels that made them: the same model on an exact_matmul backend does
// not read the default backend's entries (its frozen forward gives other bits).
TEST_F(TrainerTest, BottomCacheEntriesBelongToTheirBackend) {
  const std::string dir = *root_ + "/bottom_cache_backends";
  std::vector<int32_t> ids, labels;
  tl::Block(1, &ids, &labels);
  auto p = LoraParams::Create(model()->config(), model()->weights(), tl::AdapterConfig());
  ASSERT_TRUE(p.ok());
  auto loss_on = [&](Model* m) {
    TrainModelOptions mo;
    mo.bottom_cache_dir = dir;
    auto tm = TrainModel::Create(m, tl::AdapterConfig(), mo);
    EXPECT_TRUE(tm.ok()) << tm.status();
    if (!tm.ok()) return BottomCacheCounts{};
    EXPECT_TRUE((*tm)->Loss(*p, TrainBatch{ids, labels}).ok());
    return (*tm)->bottom_cache_stats();
  };
  EXPECT_EQ(loss_on(model()).misses, 1);
  EXPECT_EQ(loss_on(model()).hits, 1);
  CpuBackendOptions exact;
  exact.exact_matmul = true;
  auto b = CreateCpuBackend(exact);
  ASSERT_TRUE(b.ok());
  LoadModelOptions lo;
  lo.load_tokenizer = false;
  auto m = LoadModel(*root_ + "/model", b->get(), lo);
  ASSERT_TRUE(m.ok()) << m.status();
  const BottomCacheCounts c = loss_on(m->model.get());
  EXPECT_EQ(c.hits, 0);
  EXPECT_EQ(c.misses, 1);
}

// A block whose frozen layers read memory is never cached (its bottom depends on the memory, not
// on the block alone); memory only in trained layers leaves the block cacheable.
TEST_F(TrainerTest, BottomCacheSkipsBlocksWhoseFrozenLayersReadMemory) {
  TrainModelOptions mo;
  mo.bottom_cache_dir = *root_ + "/bottom_cache_memory";
  auto tm = TrainModel::Create(model(), tl::AdapterConfig(), mo);
  ASSERT_TRUE(tm.ok()) << tm.status();
  auto p = LoraParams::Create(model()->config(), model()->weights(), tl::AdapterConfig());
  ASSERT_TRUE(p.ok());
  std::vector<int32_t> ids, labels;
  tl::Block(0, &ids, &labels);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto mem_tensor = [&] {
    Tensor t = *Tensor::Empty(DType::kF32, Shape{4, tl::kHeadsKv, tl::kHd});
    for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = u(rng);
    return t;
  };
  MemoryKV bottom_mem;  // layer 0 is frozen (the adapter trains from layer 1)
  bottom_mem.layers.resize(1);
  bottom_mem.layers[0] = LayerMemoryKV{mem_tensor(), mem_tensor()};
  MemoryKV upper_mem;
  upper_mem.layers.resize(2);
  upper_mem.layers[1] = LayerMemoryKV{mem_tensor(), mem_tensor()};
  TrainBatch plain{ids, labels};
  TrainBatch with_bottom = plain, with_upper = plain;
  with_bottom.memory = &bottom_mem;
  with_upper.memory = &upper_mem;
  auto l_plain = (*tm)->Loss(*p, plain);
  auto l_bottom = (*tm)->Loss(*p, with_bottom);
  ASSERT_TRUE(l_plain.ok() && l_bottom.ok()) << l_bottom.status();
  EXPECT_NE(l_plain->mean(), l_bottom->mean());  // the memory changes the frozen layers' output
  BottomCacheCounts c = (*tm)->bottom_cache_stats();
  EXPECT_EQ(c.misses, 1);
  EXPECT_EQ(c.skipped, 1);
  auto l_bottom2 = (*tm)->Loss(*p, with_bottom);  // still computed, not read from the plain entry
  ASSERT_TRUE(l_bottom2.ok());
  EXPECT_EQ(l_bottom2->mean(), l_bottom->mean());
  auto l_upper = (*tm)->Loss(*p, with_upper);  // the plain block's bottom, from the cache
  ASSERT_TRUE(l_upper.ok());
  c = (*tm)->bottom_cache_stats();
  EXPECT_EQ(c.skipped, 2);
  EXPECT_EQ(c.hits, 1);
  EXPECT_EQ(c.misses, 1);
}

// Two streams over the 9 blocks ([0, 4) and [4, 9), so their cursors wrap at different steps):
// a run stopped after step 3 and resumed from its step-2 checkpoint ends with the bytes of an
// uninterrupted one (every stream's cursor is in the checkpoint); another stream count or more
// streams than blocks are refused.
TEST_F(TrainerTest, StreamsKeepTheirOwnCursorsAcrossAResume) {
  TrainerOptions a = Options("streams_full");
  a.streams = 2;
  auto ta = Trainer::Create(model(), data_.get(), a);
  ASSERT_TRUE(ta.ok()) << ta.status();
  int64_t tokens_step1 = 0;
  ASSERT_TRUE((*ta)
                  ->Run([&](const StepReport& r) {
                    if (r.step == 1) tokens_step1 = r.tokens;
                  })
                  .ok());
  // Step 1 reads blocks 0, 1 (stream 0) and 4, 5 (stream 1): 16 supervised tokens each.
  EXPECT_EQ(tokens_step1, 16 + 16 + 16 + 6);
  // 6 steps of 2 blocks: stream 0 (4 blocks) is back at 0, stream 1 (5 blocks) at 12 % 5.
  EXPECT_EQ((*ta)->cursors(), (std::vector<int64_t>{0, 2}));
  TrainerOptions b = Options("streams_resumed");
  b.streams = 2;
  b.checkpoint_every = 2;
  {
    auto tb = Trainer::Create(model(), data_.get(), b);
    ASSERT_TRUE(tb.ok()) << tb.status();
    (*tb)->StopAfter(3);
    ASSERT_TRUE((*tb)->Run().ok());
  }
  b.resume = true;
  auto tb = Trainer::Create(model(), data_.get(), b);
  ASSERT_TRUE(tb.ok()) << tb.status();
  EXPECT_EQ((*tb)->step(), 2);
  EXPECT_EQ((*tb)->cursors(), (std::vector<int64_t>{0, 4}));
  ASSERT_TRUE((*tb)->Run().ok());
  const std::string bytes_a = ReadAll(a.out_dir + "/adapter/adapter_model.safetensors");
  ASSERT_FALSE(bytes_a.empty());
  EXPECT_EQ(bytes_a, ReadAll(b.out_dir + "/adapter/adapter_model.safetensors"));
  EXPECT_EQ(ReadAll(a.out_dir + "/checkpoint.bin"), ReadAll(b.out_dir + "/checkpoint.bin"));
  // One stream's run differs (other blocks per step).
  auto one = Trainer::Create(model(), data_.get(), Options("streams_one"));
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_TRUE((*one)->Run().ok());
  EXPECT_NE(bytes_a, ReadAll(*root_ + "/streams_one/adapter/adapter_model.safetensors"));

  TrainerOptions other = Options("streams_full");
  other.resume = true;
  other.streams = 3;
  auto mismatch = Trainer::Create(model(), data_.get(), other);
  EXPECT_EQ(mismatch.status().code(), StatusCode::kFailedPrecondition) << mismatch.status();
  TrainerOptions many = Options("streams_many");
  many.streams = 10;
  auto too_many = Trainer::Create(model(), data_.get(), many);
  EXPECT_EQ(too_many.status().code(), StatusCode::kInvalidArgument) << too_many.status();
  many.streams = 0;
  EXPECT_EQ(Trainer::Create(model(), data_.get(), many).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(TrainerTest, DivergenceStopsWithAClearErrorAndKeepsTheLastCheckpoint) {
  TrainerOptions o = Options("diverge");
  o.lr = 1e30f;
  o.warmup_steps = 0;
  o.clip = 0.0f;
  o.checkpoint_every = 1;
  auto t = Trainer::Create(model(), data_.get(), o);
  ASSERT_TRUE(t.ok()) << t.status();
  const Status st = (*t)->Run();
  ASSERT_EQ(st.code(), StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.ToString().find("diverged at step 2"), std::string::npos) << st;
  EXPECT_NE(st.ToString().find("checkpoint (step 1)"), std::string::npos) << st;
  EXPECT_EQ((*t)->step(), 1);
  o.resume = true;
  auto r = Trainer::Create(model(), data_.get(), o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->step(), 1);
}

TEST_F(TrainerTest, EvaluatesHeldOutDataOnSchedule) {
  TrainerOptions o = Options("eval");
  o.eval_every = 4;
  auto eval = TrainData::FromDocuments({{3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5}, {2, 7, 1, 8, 2, 8}},
                                       tl::kVocab, 16);
  ASSERT_TRUE(eval.ok()) << eval.status();
  auto t = Trainer::Create(model(), data_.get(), o, &*eval);
  ASSERT_TRUE(t.ok()) << t.status();
  auto before = (*t)->Evaluate();
  ASSERT_TRUE(before.ok()) << before.status();
  std::vector<int64_t> eval_steps;
  double last = 0.0;
  ASSERT_TRUE((*t)->Run([&](const StepReport& r) {
                    if (r.evaluated) {
                      eval_steps.push_back(r.step);
                      last = r.eval_loss;
                    }
                  })
                  .ok());
  EXPECT_EQ(eval_steps, (std::vector<int64_t>{4, 6}));
  auto after = (*t)->Evaluate();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, last);
  EXPECT_NE(*after, *before);
  // The metrics log carries it on those steps only.
  std::ifstream in(o.out_dir + "/metrics.jsonl");
  std::string line;
  int with_eval = 0;
  while (std::getline(in, line)) with_eval += nlohmann::json::parse(line).contains("eval_loss");
  EXPECT_EQ(with_eval, 2);
}

TEST_F(TrainerTest, RefusesBadOptions) {
  TrainerOptions o = Options("bad");
  o.steps = 0;
  EXPECT_EQ(Trainer::Create(model(), data_.get(), o).status().code(), StatusCode::kInvalidArgument);
  o = Options("bad");
  o.lora.first_layer = tl::kLayers;
  EXPECT_EQ(Trainer::Create(model(), data_.get(), o).status().code(), StatusCode::kInvalidArgument);
  o = Options("bad");
  o.lora.rank = 0;
  EXPECT_EQ(Trainer::Create(model(), data_.get(), o).status().code(), StatusCode::kInvalidArgument);
  o = Options("bad");
  o.lr = -1.0f;
  EXPECT_EQ(Trainer::Create(model(), data_.get(), o).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(TrainerTest, PeftFolderRoundTripsAndKeepsTheLoss) {
  auto p = LoraParams::Create(model()->config(), model()->weights(), tl::AdapterConfig());
  ASSERT_TRUE(p.ok()) << p.status();
  tl::SetAdapterValues(&*p);
  // Norms that differ from the base model, so their export matters.
  for (const LoraTensor& t : p->tensors()) {
    if (t.kind == LoraTensor::Kind::kAttnNorm) p->values()[static_cast<size_t>(t.offset)] += 0.5f;
  }
  const char* keep = std::getenv("MUNINN_LORA_EXPORT_DIR");
  const std::string dir = keep != nullptr ? std::string(keep) : *root_ + "/export";
  ASSERT_TRUE(WritePeftAdapter(*p, model()->weights(), dir, "tiny_lora_llama").ok());
  auto cfg = nlohmann::json::parse(ReadAll(dir + "/adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["r"], tl::kRank);
  EXPECT_EQ(cfg["layers_to_transform"], nlohmann::json({1, 2}));
  auto back = ReadPeftAdapter(dir, model()->config(), model()->weights());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(std::equal(back->values().begin(), back->values().end(), p->values().begin(),
                         p->values().end()));
  // muninn's losses under this adapter, for the PEFT cross-check.
  auto tm = TrainModel::Create(model(), tl::AdapterConfig());
  ASSERT_TRUE(tm.ok()) << tm.status();
  nlohmann::json check = {{"losses", nlohmann::json::array()}};
  for (int b = 0; b < 2; ++b) {
    std::vector<int32_t> ids, labels;
    tl::Block(b, &ids, &labels);
    auto l = (*tm)->Loss(*back, TrainBatch{ids, labels});
    ASSERT_TRUE(l.ok()) << l.status();
    check["losses"].push_back(l->mean());
  }
  std::ofstream(dir + "/muninn_check.json") << check.dump(1);
  // A folder PEFT would write with options muninn does not support is refused.
  cfg["use_dora"] = true;
  std::ofstream(dir + "/adapter_config.json") << cfg.dump();
  EXPECT_EQ(ReadPeftAdapter(dir, model()->config(), model()->weights()).status().code(),
            StatusCode::kInvalidArgument);
  cfg["use_dora"] = false;
  std::ofstream(dir + "/adapter_config.json") << cfg.dump(2);
}

// One PEFT folder serves both checkpoints of the same model: trained on the HF folder and read
// into the GGUF file (Q/K rows permuted, interleaved RoPE), or the other way, it gives the same
// loss; the q/k B rows are reordered on the way (without that the GGUF loss differs).
TEST_F(TrainerTest, PeftFolderMovesBetweenGgufAndHfCheckpoints) {
  const std::string gguf_path = *root_ + "/tiny.gguf";
  auto gguf = WriteAndLoadGguf(gguf_path);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  LoadModelOptions lo;
  lo.load_tokenizer = false;
  ASSERT_EQ(gguf->model->config().rope.layout, RopeLayout::kInterleaved);
  auto hf_params = LoraParams::Create(model()->config(), model()->weights(), tl::AdapterConfig());
  ASSERT_TRUE(hf_params.ok());
  tl::SetAdapterValues(&*hf_params);
  const std::string dir = *root_ + "/export_hf";
  ASSERT_TRUE(WritePeftAdapter(*hf_params, model()->weights(), dir, "tiny").ok());
  auto gguf_params = ReadPeftAdapter(dir, gguf->model->config(), gguf->model->weights());
  ASSERT_TRUE(gguf_params.ok()) << gguf_params.status();
  std::vector<int32_t> ids, labels;
  tl::Block(0, &ids, &labels);
  auto hf_tm = TrainModel::Create(model(), tl::AdapterConfig());
  auto gguf_tm = TrainModel::Create(gguf->model.get(), tl::AdapterConfig());
  ASSERT_TRUE(hf_tm.ok() && gguf_tm.ok());
  auto hf_loss = (*hf_tm)->Loss(*hf_params, TrainBatch{ids, labels});
  auto gguf_loss = (*gguf_tm)->Loss(*gguf_params, TrainBatch{ids, labels});
  ASSERT_TRUE(hf_loss.ok() && gguf_loss.ok());
  EXPECT_NEAR(gguf_loss->mean(), hf_loss->mean(), 1e-5 * hf_loss->mean());
  // The q B rows really moved (the test would pass vacuously otherwise).
  const int64_t ob = hf_params->OffsetB(1, LoraTarget::kQ);
  EXPECT_NE(hf_params->values()[static_cast<size_t>(ob + tl::kRank)],
            gguf_params->values()[static_cast<size_t>(ob + tl::kRank)]);
  // And back: GGUF-trained values exported and read into the HF model are the HF values.
  const std::string dir2 = *root_ + "/export_gguf";
  ASSERT_TRUE(WritePeftAdapter(*gguf_params, gguf->model->weights(), dir2, "tiny").ok());
  auto back = ReadPeftAdapter(dir2, model()->config(), model()->weights());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(std::equal(back->values().begin(), back->values().end(), hf_params->values().begin(),
                         hf_params->values().end()));

  // llama.cpp's GGUF adapter: the same bytes from either form (q/k B rows in GGUF order), the
  // metadata and shapes llama.cpp's loader checks (src/llama-adapter.cpp).
  const std::string from_hf = *root_ + "/hf.lora.gguf", from_gguf = *root_ + "/gguf.lora.gguf";
  ASSERT_TRUE(WriteLlamaCppLoraGguf(*hf_params, from_hf).ok());
  ASSERT_TRUE(WriteLlamaCppLoraGguf(*gguf_params, from_gguf).ok());
  std::ifstream a(from_hf, std::ios::binary), b(from_gguf, std::ios::binary);
  const std::string bytes_a((std::istreambuf_iterator<char>(a)), {});
  const std::string bytes_b((std::istreambuf_iterator<char>(b)), {});
  EXPECT_EQ(bytes_a, bytes_b);
  auto f = GgufFile::Open(from_gguf);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(*(*f)->FindMetadata("general.type")->AsString(), "adapter");
  EXPECT_EQ(*(*f)->FindMetadata("adapter.type")->AsString(), "lora");
  EXPECT_EQ(*(*f)->FindMetadata("adapter.lora.alpha")->AsFloat(), tl::kAlpha);
  auto qa = (*f)->GetTensor("blk.1.attn_q.weight.lora_a");
  auto qb = (*f)->GetTensor("blk.1.attn_q.weight.lora_b");
  auto kb = (*f)->GetTensor("blk.2.attn_k.weight.lora_b");
  auto down_a = (*f)->GetTensor("blk.2.ffn_down.weight.lora_a");
  ASSERT_TRUE(qa.ok() && qb.ok() && kb.ok() && down_a.ok());
  EXPECT_EQ(qa->shape(), (Shape{tl::kRank, tl::kEmbd}));
  EXPECT_EQ(qb->shape(), (Shape{tl::kHeads * tl::kHd, tl::kRank}));
  EXPECT_EQ(kb->shape(), (Shape{tl::kHeadsKv * tl::kHd, tl::kRank}));
  EXPECT_EQ(down_a->shape(), (Shape{tl::kRank, tl::kFf}));
  EXPECT_TRUE(std::equal(qb->data_as<const float>(),
                         qb->data_as<const float>() + qb->dim(0) * qb->dim(1),
                         gguf_params->values().begin() + gguf_params->OffsetB(1, LoraTarget::kQ)));
  EXPECT_EQ((*f)->FindTensor("blk.0.attn_q.weight.lora_a"), nullptr);

  // `muninn lora merge`: the merged GGUF loads and gives the in-memory merge's logits exactly;
  // tensors the adapter does not touch keep their bytes.
  const std::string merged_path = *root_ + "/merged.gguf";
  ASSERT_TRUE(MergeLoraIntoGguf(gguf_path, *gguf_params, 1.0f, merged_path).ok());
  auto merged_file = LoadModel(merged_path, backend_.get(), lo);
  ASSERT_TRUE(merged_file.ok()) << merged_file.status();
  auto merged_mem = MergeLora(*gguf->model, *gguf_params);
  ASSERT_TRUE(merged_mem.ok()) << merged_mem.status();
  ForwardOptions fo;
  fo.all_logits = true;
  auto la = merged_file->model->Forward(ids, nullptr, fo);
  auto lb = (*merged_mem)->Forward(ids, nullptr, fo);
  ASSERT_TRUE(la.ok() && lb.ok());
  const int64_t n = la->logits.dim(0) * la->logits.dim(1);
  EXPECT_TRUE(std::equal(la->logits.data_as<const float>(), la->logits.data_as<const float>() + n,
                         lb->logits.data_as<const float>()));
  auto base_logits = gguf->model->Forward(ids, nullptr, fo);
  ASSERT_TRUE(base_logits.ok());
  EXPECT_FALSE(std::equal(la->logits.data_as<const float>(), la->logits.data_as<const float>() + n,
                          base_logits->logits.data_as<const float>()));
  auto src = GgufFile::Open(gguf_path);
  auto dst = GgufFile::Open(merged_path);
  ASSERT_TRUE(src.ok() && dst.ok());
  auto t0 = (*src)->GetTensor("blk.0.attn_q.weight");
  auto t1 = (*dst)->GetTensor("blk.0.attn_q.weight");
  ASSERT_TRUE(t0.ok() && t1.ok());
  EXPECT_EQ(0, std::memcmp(t0->data(), t1->data(), t0->nbytes()));
}

// `lora merge --type`: adapted matrices written in the type asked for. A q4_1 model file (the
// tiny model with a zero adapter merged as q4_1) gives its own bytes back through a zero adapter
// with kSame and q8_0 matrices with kAuto; a real adapter merged as q8_0 gives logits close to the
// exact (f32) merge but not equal to them; a type muninn cannot write, or rows that are not whole
// blocks, are InvalidArgument.
TEST_F(TrainerTest, LoraMergeWritesTheAskedMatrixTypes) {
  const std::string f32_path = *root_ + "/tiny.gguf";
  auto f32_model = WriteAndLoadGguf(f32_path);
  ASSERT_TRUE(f32_model.ok()) << f32_model.status();
  LoadModelOptions lo;
  lo.load_tokenizer = false;
  LoraConfig c = tl::AdapterConfig();  // every target's rows are whole 32-blocks but down's (48)
  c.targets = {LoraTarget::kQ, LoraTarget::kK, LoraTarget::kV, LoraTarget::kO, LoraTarget::kGate,
               LoraTarget::kUp};
  auto zero = LoraParams::Create(f32_model->model->config(), f32_model->model->weights(), c);
  ASSERT_TRUE(zero.ok()) << zero.status();
  const std::string q41_path = *root_ + "/tiny.q4_1.gguf";
  ASSERT_TRUE(MergeLoraIntoGguf(f32_path, *zero, 1.0f, q41_path,
                                MergeMatrixType::Fixed(DType::kQ4_1))
                  .ok());
  auto q41 = GgufFile::Open(q41_path);
  ASSERT_TRUE(q41.ok()) << q41.status();
  const std::string adapted = "blk.1.attn_q.weight", untouched = "blk.0.attn_q.weight";
  EXPECT_EQ((*q41)->FindTensor(adapted)->dtype, DType::kQ4_1);
  EXPECT_EQ((*q41)->FindTensor(untouched)->dtype, DType::kF32);

  auto q41_model = LoadModel(q41_path, backend_.get(), lo);
  ASSERT_TRUE(q41_model.ok()) << q41_model.status();
  auto zero41 = LoraParams::Create(q41_model->model->config(), q41_model->model->weights(), c);
  ASSERT_TRUE(zero41.ok());
  const std::string same_path = *root_ + "/same.gguf", auto_path = *root_ + "/auto.gguf";
  MergeMatrixType same;
  same.kind = MergeMatrixType::kSame;
  ASSERT_TRUE(MergeLoraIntoGguf(q41_path, *zero41, 1.0f, same_path, same).ok());
  ASSERT_TRUE(MergeLoraIntoGguf(q41_path, *zero41, 1.0f, auto_path).ok());
  auto same_file = GgufFile::Open(same_path);
  auto auto_file = GgufFile::Open(auto_path);
  ASSERT_TRUE(same_file.ok() && auto_file.ok());
  for (const char* name : {"blk.1.attn_q.weight", "blk.2.attn_output.weight", "blk.2.ffn_up.weight"}) {
    SCOPED_TRACE(name);
    auto a = (*q41)->GetTensor(name);
    auto b = (*same_file)->GetTensor(name);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(b->dtype(), DType::kQ4_1);
    EXPECT_EQ(0, std::memcmp(a->data(), b->data(), static_cast<size_t>(a->nbytes())));
    EXPECT_EQ((*auto_file)->FindTensor(name)->dtype, DType::kQ8_0);
  }

  // A real adapter on the f32 file: kAuto keeps f32 (the exact merge), q8_0 comes close.
  auto p = LoraParams::Create(f32_model->model->config(), f32_model->model->weights(), c);
  ASSERT_TRUE(p.ok());
  tl::SetAdapterValues(&*p);
  const std::string exact_path = *root_ + "/exact.gguf", q8_path = *root_ + "/q8.gguf";
  ASSERT_TRUE(MergeLoraIntoGguf(f32_path, *p, 1.0f, exact_path).ok());
  ASSERT_TRUE(MergeLoraIntoGguf(f32_path, *p, 1.0f, q8_path, MergeMatrixType::Fixed(DType::kQ8_0))
                  .ok());
  auto exact = LoadModel(exact_path, backend_.get(), lo);
  auto q8 = LoadModel(q8_path, backend_.get(), lo);
  ASSERT_TRUE(exact.ok() && q8.ok());
  EXPECT_EQ(exact->model->weights().layers[1].wq.dtype(), DType::kF32);
  EXPECT_EQ(q8->model->weights().layers[1].wq.dtype(), DType::kQ8_0);
  std::vector<int32_t> ids, labels;
  tl::Block(0, &ids, &labels);
  ForwardOptions fo;
  fo.all_logits = true;
  auto la = exact->model->Forward(ids, nullptr, fo);
  auto lb = q8->model->Forward(ids, nullptr, fo);
  ASSERT_TRUE(la.ok() && lb.ok());
  double max_diff = 0.0, max_abs = 0.0;
  for (int64_t i = 0; i < la->logits.numel(); ++i) {
    const double x = la->logits.data_as<const float>()[i], y = lb->logits.data_as<const float>()[i];
    max_diff = std::max(max_diff, std::fabs(x - y));
    max_abs = std::max(max_abs, std::fabs(x));
  }
  // (The q8_0 model also runs its matmuls on q8_0 activations: 3.6 % of the largest logit here.)
  EXPECT_GT(max_diff, 0.0);
  EXPECT_LT(max_diff, 0.08 * max_abs);

  // Refusals: an activation format, and down's 48-value rows as q4_1 blocks of 32.
  EXPECT_EQ(MergeLoraIntoGguf(f32_path, *p, 1.0f, *root_ + "/x.gguf",
                              MergeMatrixType::Fixed(DType::kQ8_1))
                .code(),
            StatusCode::kInvalidArgument);
  auto with_down = LoraParams::Create(f32_model->model->config(), f32_model->model->weights(),
                                      tl::AdapterConfig());
  ASSERT_TRUE(with_down.ok());
  const Status st = MergeLoraIntoGguf(f32_path, *with_down, 1.0f, *root_ + "/y.gguf",
                                      MergeMatrixType::Fixed(DType::kQ4_1));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("ffn_down"), std::string::npos) << st;
  EXPECT_FALSE(std::filesystem::exists(*root_ + "/y.gguf"));
}

}  // namespace
}  // namespace muninn::model
