// The long-context session on a device backend (issue 15), checked without a GPU: the same tiny
// stack runs on the CPU backend and on DeviceDouble (device_double.h: CPU kernels behind
// device-only tensors and the CUDA backend's rules for where operands live). Ingest, retrieval,
// Begin, scoring and generation with overflow must succeed on the double — memory K/V reach
// Attention only after a Transfer, results come back only through Transfer — and give exactly the
// CPU backend's logits, log-probabilities and tokens, in every memory mode.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "muninn/core/cpu_backend.h"
#include "muninn/model/kv_cache.h"
#include "muninn/model/memory_placement.h"
#include "muninn/model/sampler.h"
#include "muninn/retriever/hidden_state_embedder.h"
#include "muninn/retriever/long_context_session.h"
#include "retriever/device_double.h"
#include "retriever/tiny_stack.h"
#if defined(MUNINN_HAVE_CUDA)
#include "muninn/core/cuda_backend.h"
#endif

namespace muninn::retriever {
namespace {

namespace tt = muninn::testing;

// A bank for `o`'s memory modes on the tiny model (f16 K/V as in production).
std::unique_ptr<memory::MemoryBank> BankFor(const LongContextOptions& o,
                                            const model::ModelConfig& c) {
  memory::MemoryBankOptions b;
  b.in_memory = true;
  b.dim = 4;
  b.kv_layers = o.KvLayers(c);
  if (!b.kv_layers.empty()) {
    b.n_head_kv = tt::kHeadsKv;
    b.head_dim = tt::kHd;
  } else {
    b.n_head_kv = 0;
    b.head_dim = 0;
  }
  b.state_dim = o.StateDim(c);
  b.kv_dtype = DType::kF16;
  b.index_factory = "Flat";
  auto bank = memory::MemoryBank::Open(b);
  EXPECT_TRUE(bank.ok()) << bank.status();
  return std::move(*bank);
}

std::unique_ptr<Backend> CpuBackend() {
  auto cpu = CreateCpuBackend({});
  EXPECT_TRUE(cpu.ok()) << cpu.status();
  return std::move(*cpu);
}

// One backend's stack: model (same seed, so the same weights), tokenizer, bank, embedder.
struct Stack {
  // host_layers > 0: a split model (partial offload), its bottom layers on a CPU backend of its
  // own.
  explicit Stack(std::unique_ptr<Backend> b, int32_t host_layers = 0) : backend(std::move(b)) {
    double_ = dynamic_cast<tt::DeviceDouble*>(backend.get());
    model::LayerSplit split;
    if (host_layers > 0) {
      host = CpuBackend();
      split = {host.get(), host_layers};
    }
    model = tt::TinyModel(backend.get(), 7, split);
    tok = tt::ByteTokenizer();
  }
  std::unique_ptr<Backend> host;  // a split model's host layers
  std::unique_ptr<Backend> backend;
  tt::DeviceDouble* double_ = nullptr;  // set when `backend` is the double
  std::unique_ptr<model::Model> model;
  std::unique_ptr<model::Tokenizer> tok;
  std::unique_ptr<memory::MemoryBank> bank;
  tt::KeywordEmbedder embedder;
};

// What a scenario observed; compared field by field between the backends.
struct Outcome {
  std::vector<memory::ChunkId> chunk_ids;
  std::vector<float> begin_logits;
  std::vector<std::string> excerpts;
  std::vector<float> logprobs;
  std::vector<float> logprobs_logits;
  std::vector<model::TokenId> generated;
  std::vector<float> final_logits;
  int64_t retrieved_tokens = 0;
};

const std::string kDoc =
    "aaaaaaaaaaaaaaaa"  // chunk 0: 'a'
    "bbbbbbbbbbbbbbbb"  // chunk 1: 'b'
    "cccccccccccccccc"  // chunk 2: 'c'
    "abba cadd dab 17"  // chunk 3: mixed
    "ddddddddddddddd";  // chunk 4: 'd' (15 bytes: a short last chunk)

// Ingest kDoc, Begin on a prompt asking for 'c', score a window, then generate greedily through
// overflow (a 32-token window) and keep the last logits.
Outcome RunScenario(Stack& s, const LongContextOptions& o) {
  Outcome out;
  s.bank = BankFor(o, s.model->config());
  auto created =
      LongContextSession::Create(s.model.get(), s.tok.get(), s.bank.get(), &s.embedder, o);
  EXPECT_TRUE(created.ok()) << created.status();
  if (!created.ok()) return out;
  LongContextSession& session = **created;
  auto ingested = session.IngestText(3, kDoc);
  EXPECT_TRUE(ingested.ok()) << ingested.status();
  if (!ingested.ok()) return out;
  out.chunk_ids = ingested->chunk_ids;
  if (o.has(kModeReread)) {
    auto ex = session.RetrieveExcerpts("cccc");
    EXPECT_TRUE(ex.ok()) << ex.status();
    if (ex.ok()) {
      for (const Excerpt& e : *ex) out.excerpts.push_back(e.text);
    }
  }
  const std::vector<model::TokenId> prompt = s.tok->Encode("cc abcd cc dab", false, false);
  Status st = session.Begin(prompt, "cccc");
  EXPECT_TRUE(st.ok()) << st;
  if (!st.ok()) return out;
  out.begin_logits.assign(session.logits().begin(), session.logits().end());
  out.retrieved_tokens = session.retrieved().n_tokens();
  auto lp = session.TokenLogProbs(s.tok->Encode("abba cadd dab 17 cc", false, false), "abba");
  EXPECT_TRUE(lp.ok()) << lp.status();
  if (lp.ok()) out.logprobs = *lp;
  out.logprobs_logits.assign(session.logits().begin(), session.logits().end());
  st = session.Begin(prompt, "cccc");
  EXPECT_TRUE(st.ok()) << st;
  auto sampler = model::Sampler::Create(model::SamplerOptions::Greedy());
  EXPECT_TRUE(sampler.ok());
  GenerateOptions go;
  go.max_tokens = 40;  // 14 + 40 > 32: at least one overflow, which ingests and re-retrieves
  go.stop_at_eos = false;
  auto g = session.Generate(go, *sampler);
  EXPECT_TRUE(g.ok()) << g.status();
  if (g.ok()) out.generated = g->tokens;
  out.final_logits.assign(session.logits().begin(), session.logits().end());
  return out;
}

class DeviceSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    opts_.memory_layer = 1;
    opts_.retrieval_layers = {1, 3};
    opts_.chunk_tokens = 16;
    opts_.top_k = 2;
    opts_.local_window = 32;
    opts_.kv_cache_dtype = DType::kF16;
    opts_.context.sink_tokens = 16;
    opts_.context.top_k = 2;
    opts_.knn.k = 8;
    opts_.knn.chunks = 4;
    opts_.knn.lambda = 0.5f;
    opts_.reread.top_k = 2;
  }
  // Runs the scenario on both stacks and expects identical outcomes.
  void ExpectSameOnBothBackends(const LongContextOptions& o) {
    const Outcome cpu = RunScenario(cpu_, o);
    const int64_t uploads_before = gpu_.double_->uploads;
    const int64_t downloads_before = gpu_.double_->downloads;
    const int64_t memory_before = gpu_.double_->memory_attentions;
    const Outcome dev = RunScenario(gpu_, o);
    ASSERT_FALSE(cpu.begin_logits.empty());
    EXPECT_EQ(dev.chunk_ids, cpu.chunk_ids);
    EXPECT_EQ(dev.excerpts, cpu.excerpts);
    EXPECT_EQ(dev.retrieved_tokens, cpu.retrieved_tokens);
    EXPECT_EQ(dev.begin_logits, cpu.begin_logits);  // the same kernels on the same bytes: exact
    EXPECT_EQ(dev.logprobs, cpu.logprobs);
    EXPECT_EQ(dev.logprobs_logits, cpu.logprobs_logits);
    EXPECT_EQ(dev.generated, cpu.generated);
    EXPECT_EQ(dev.final_logits, cpu.final_logits);
    EXPECT_GT(gpu_.double_->downloads, downloads_before);  // logits at least
    if (!o.KvLayers(gpu_.model->config()).empty()) {
      // Memory K/V went up to the device and reached its Attention.
      EXPECT_GT(gpu_.double_->uploads, uploads_before);
      EXPECT_GT(gpu_.double_->memory_attentions, memory_before);
    }
    // Partial offload: layers 0-1 on the host, 2-3 and the head on the device; the same bits.
    const Outcome split = RunScenario(split_, o);
    EXPECT_EQ(split.chunk_ids, cpu.chunk_ids);
    EXPECT_EQ(split.excerpts, cpu.excerpts);
    EXPECT_EQ(split.retrieved_tokens, cpu.retrieved_tokens);
    EXPECT_EQ(split.begin_logits, cpu.begin_logits);
    EXPECT_EQ(split.logprobs, cpu.logprobs);
    EXPECT_EQ(split.logprobs_logits, cpu.logprobs_logits);
    EXPECT_EQ(split.generated, cpu.generated);
    EXPECT_EQ(split.final_logits, cpu.final_logits);
  }

  Stack cpu_{CpuBackend()};
  Stack gpu_{std::make_unique<tt::DeviceDouble>(CpuBackend())};
  Stack split_{std::make_unique<tt::DeviceDouble>(CpuBackend()), /*host_layers=*/2};
  LongContextOptions opts_;
};

TEST_F(DeviceSessionTest, MemLongZeroPositionsMatchesTheCpu) {
  LongContextOptions o = opts_;
  o.modes = kModeMemLong;
  ExpectSameOnBothBackends(o);
}

TEST_F(DeviceSessionTest, MemLongBeforeWindowPositionsMatchesTheCpu) {
  LongContextOptions o = opts_;
  o.modes = kModeMemLong;
  o.memory_position = MemoryPosition::kBeforeWindow;
  ExpectSameOnBothBackends(o);
}

// A split model whose retrieval layers include a host layer (1 of {1, 3}) rotates the memory keys
// on the host: the device layer's copy goes up, and nothing comes back down for the host layer —
// as many downloads as with unrotated (zero-position) memory.
TEST_F(DeviceSessionTest, ASplitModelRotatesMemoryKeysWhereItsRetrievalLayersRun) {
  int64_t downloads[2];
  for (int i = 0; i < 2; ++i) {
    LongContextOptions o = opts_;
    o.modes = kModeMemLong;
    o.memory_position = i == 0 ? MemoryPosition::kZero : MemoryPosition::kBeforeWindow;
    const int64_t before = split_.double_->downloads;
    RunScenario(split_, o);
    downloads[i] = split_.double_->downloads - before;
  }
  EXPECT_GT(downloads[0], 0);  // the logits
  EXPECT_EQ(downloads[1], downloads[0]);
}

TEST_F(DeviceSessionTest, RereadMatchesTheCpu) {
  LongContextOptions o = opts_;
  o.modes = kModeReread;
  ExpectSameOnBothBackends(o);
}

TEST_F(DeviceSessionTest, ContextConstantPositionMatchesTheCpu) {
  LongContextOptions o = opts_;
  o.modes = kModeContext;
  o.context.position = ContextPosition::kConstant;
  ExpectSameOnBothBackends(o);
}

TEST_F(DeviceSessionTest, ContextContiguousPositionMatchesTheCpu) {
  LongContextOptions o = opts_;
  o.modes = kModeContext;
  o.context.position = ContextPosition::kContiguous;
  ExpectSameOnBothBackends(o);
}

TEST_F(DeviceSessionTest, ContextRepresentativeKeysMatchesTheCpu) {
  LongContextOptions o = opts_;
  o.modes = kModeContext;
  o.context.selection = ChunkSelection::kRepresentativeKeys;
  o.context.layers = {1, 3};
  ExpectSameOnBothBackends(o);
}

TEST_F(DeviceSessionTest, ContextualIngestMatchesTheCpu) {
  LongContextOptions o = opts_;
  o.modes = kModeContext;
  o.context.contextual_ingest = true;
  ExpectSameOnBothBackends(o);
}

TEST_F(DeviceSessionTest, KnnLmMatchesTheCpu) {
  LongContextOptions o = opts_;
  o.modes = kModeKnnLm;
  ExpectSameOnBothBackends(o);
}

TEST_F(DeviceSessionTest, KnnLmWithContextTokensAndMemLongMatchesTheCpu) {
  LongContextOptions o = opts_;
  o.modes = kModeKnnLm | kModeMemLong;
  o.knn.context_tokens = 8;
  ExpectSameOnBothBackends(o);
}

TEST_F(DeviceSessionTest, AllModesTogetherMatchTheCpu) {
  LongContextOptions o = opts_;
  o.modes = kAllMemoryModes;
  ExpectSameOnBothBackends(o);
}

TEST_F(DeviceSessionTest, HiddenStateEmbedderMatchesTheCpu) {
  const std::vector<model::TokenId> ids = cpu_.tok->Encode("abcabc dab", false, false);
  for (int32_t layer : {0, 2}) {
    auto a = HiddenStateEmbedder::Create(cpu_.model.get(), layer);
    auto b = HiddenStateEmbedder::Create(gpu_.model.get(), layer);
    ASSERT_TRUE(a.ok() && b.ok());
    const std::vector<EmbedRequest> req{{"abcabc dab", ids}};
    auto va = (*a)->Embed(req);
    auto vb = (*b)->Embed(req);
    ASSERT_TRUE(va.ok()) << va.status();
    ASSERT_TRUE(vb.ok()) << vb.status();
    EXPECT_EQ(*vb, *va) << "layer " << layer;
  }
}

// The rules the double enforces are the CUDA backend's: host memory handed to Attention is
// refused, so a session that skipped the copy would fail rather than pass by accident.
TEST_F(DeviceSessionTest, TheDoubleRefusesHostMemoryInAttention) {
  Backend* b = gpu_.backend.get();
  auto q = b->Allocate(DType::kF32, Shape{1, tt::kHeads, tt::kHd});
  auto k = b->Allocate(DType::kF32, Shape{1, tt::kHeadsKv, tt::kHd});
  auto v = b->Allocate(DType::kF32, Shape{1, tt::kHeadsKv, tt::kHd});
  auto out = b->Allocate(DType::kF32, Shape{1, tt::kHeads, tt::kHd});
  ASSERT_TRUE(q.ok() && k.ok() && v.ok() && out.ok());
  auto host_k = Tensor::Zeros(DType::kF32, Shape{3, tt::kHeadsKv, tt::kHd});
  auto host_v = Tensor::Zeros(DType::kF32, Shape{3, tt::kHeadsKv, tt::kHd});
  ASSERT_TRUE(host_k.ok() && host_v.ok());
  Status st = b->Attention(*q, *k, *v, *host_k, *host_v, AttentionParams{}, &*out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("Transfer it to the device first"), std::string::npos) << st;
  // Placed memory is accepted, and a second placement reuses the device buffers.
  model::MemoryKV mem;
  mem.layers.resize(2);
  mem.layers[0] = model::LayerMemoryKV{*host_k, *host_v};
  mem.layers[1] = mem.layers[0];  // shared by two layers: copied once
  model::MemoryPlacement placement(b);
  const int64_t uploads = gpu_.double_->uploads, allocations = gpu_.double_->allocations;
  auto placed = placement.Place(mem);
  ASSERT_TRUE(placed.ok()) << placed.status();
  EXPECT_EQ(gpu_.double_->uploads - uploads, 2);  // K and V once, not once per layer
  EXPECT_EQ(placed->layers[0].k.device(), Device::Cuda(0));
  EXPECT_EQ(placed->layers[1].k.buffer(), placed->layers[0].k.buffer());
  st = b->Attention(*q, *k, *v, placed->layers[0].k, placed->layers[0].v, AttentionParams{}, &*out);
  EXPECT_TRUE(st.ok()) << st;
  const int64_t allocated = gpu_.double_->allocations - allocations;
  auto again = placement.Place(mem);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(gpu_.double_->allocations - allocations, allocated) << "the buffers are reused";
  // On the CPU backend placement is the identity: no copy.
  model::MemoryPlacement on_cpu(cpu_.backend.get());
  auto same = on_cpu.Place(mem);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->layers[0].k.buffer(), host_k->buffer());
  EXPECT_EQ(on_cpu.reserved_bytes(), 0);
}

// Partial offload (Model's LayerSplit): the embeddings and layers 0-1 with their KV rows on the
// host, layers 2-3, their KV rows and the head on the device; bad splits are refused.
TEST_F(DeviceSessionTest, PartialOffloadPlacesLayersWhereTheyRun) {
  const model::Model& m = *split_.model;
  EXPECT_EQ(m.host_layers(), 2);
  EXPECT_EQ(m.LayerBackend(1), split_.host.get());
  EXPECT_EQ(m.LayerBackend(2), split_.backend.get());
  EXPECT_TRUE(m.weights().tok_embd.device().is_cpu());
  EXPECT_TRUE(m.weights().layers[1].wq.device().is_cpu());
  EXPECT_EQ(m.weights().layers[2].wq.device(), Device::Cuda(0));
  EXPECT_EQ(m.weights().output.device(), Device::Cuda(0));
  EXPECT_EQ(m.weights().output_norm.device(), Device::Cuda(0));
  auto cache = m.NewKvCache(model::KvCacheOptions{.n_ctx = 8});
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_TRUE((*cache)->Keys(1, 1).device().is_cpu());
  EXPECT_EQ((*cache)->Keys(2, 1).device(), Device::Cuda(0));
  // Memory for a split model: host layers get host tensors (even ones rotated on the device).
  auto k = Tensor::Zeros(DType::kF32, Shape{2, tt::kHeadsKv, tt::kHd});
  ASSERT_TRUE(k.ok());
  auto on_dev = split_.backend->Allocate(DType::kF32, Shape{2, tt::kHeadsKv, tt::kHd});
  ASSERT_TRUE(on_dev.ok());
  ASSERT_TRUE(split_.backend->Transfer(*k, &*on_dev).ok());
  model::MemoryKV mem;
  mem.layers = {model::LayerMemoryKV{*on_dev, *on_dev}, model::LayerMemoryKV{*k, *k},
                model::LayerMemoryKV{*k, *k}, model::LayerMemoryKV{*on_dev, *on_dev}};
  model::MemoryPlacement placement(m);
  auto placed = placement.Place(mem);
  ASSERT_TRUE(placed.ok()) << placed.status();
  EXPECT_TRUE(placed->layers[0].k.device().is_cpu());
  EXPECT_TRUE(placed->layers[1].k.device().is_cpu());
  EXPECT_EQ(placed->layers[2].k.device(), Device::Cuda(0));
  EXPECT_EQ(placed->layers[3].k.device(), Device::Cuda(0));
  // A tied head (output = the embedding table): the table stays on the host for the embeddings,
  // the head gets a device copy; logits as on the CPU.
  {
    auto host_model = tt::TinyModel(cpu_.backend.get());
    model::ModelWeights w = host_model->weights();
    w.output = w.tok_embd;
    auto tied_cpu = model::Model::Create(cpu_.backend.get(), host_model->config(), w,
                                         model::ModelLayout::Plain(tt::kLayers));
    auto tied_split =
        model::Model::Create(split_.backend.get(), host_model->config(), w,
                             model::ModelLayout::Plain(tt::kLayers), {split_.host.get(), 3});
    ASSERT_TRUE(tied_cpu.ok() && tied_split.ok()) << tied_split.status();
    EXPECT_TRUE((*tied_split)->weights().tok_embd.device().is_cpu());
    EXPECT_TRUE((*tied_split)->tied_head());
    EXPECT_EQ((*tied_split)->weight_bytes(), (*tied_cpu)->weight_bytes());
    EXPECT_EQ((*tied_split)->weights().output.device(), Device::Cuda(0));
    const std::vector<model::TokenId> ids = {3, 1, 4, 1, 5};
    auto want = (*tied_cpu)->Forward(ids, nullptr);
    auto got = (*tied_split)->Forward(ids, nullptr);
    ASSERT_TRUE(want.ok() && got.ok()) << got.status();
    ASSERT_EQ(want->logits.numel(), got->logits.numel());
    EXPECT_EQ(std::memcmp(want->logits.data(), got->logits.data(), want->logits.nbytes()), 0);
  }
  // Bad splits.
  auto bad = [&](Backend* device, const model::LayerSplit& s) {
    auto w = tt::TinyModel(cpu_.backend.get());  // host weights to build from
    return model::Model::Create(device, w->config(), w->weights(),
                                model::ModelLayout::Plain(tt::kLayers), s)
        .status();
  };
  EXPECT_EQ(bad(split_.backend.get(), {split_.host.get(), tt::kLayers}).code(),
            StatusCode::kInvalidArgument);  // nothing left for the device
  EXPECT_EQ(bad(split_.backend.get(), {split_.backend.get(), 1}).code(),
            StatusCode::kInvalidArgument);  // the "host" is a device
  EXPECT_EQ(bad(cpu_.backend.get(), {split_.host.get(), 1}).code(),
            StatusCode::kInvalidArgument);  // no device at all
  EXPECT_EQ(bad(split_.backend.get(), {nullptr, 1}).code(), StatusCode::kInvalidArgument);
}

// A decode step on a device copies its indices up once: the token id and its position, and the
// memory queries' position once for all layers that read memory — not one copy per RoPE call
// (each host index operand is a hidden small upload on CUDA). Same logits as the CPU.
TEST_F(DeviceSessionTest, ADecodeStepCopiesItsIndicesUpOnce) {
  model::MemoryKV mem;
  for (int l = 0; l < tt::kLayers; ++l) {
    auto k = Tensor::Zeros(DType::kF32, Shape{3, tt::kHeadsKv, tt::kHd});
    auto v = Tensor::Zeros(DType::kF32, Shape{3, tt::kHeadsKv, tt::kHd});
    ASSERT_TRUE(k.ok() && v.ok());
    for (int64_t i = 0; i < k->numel(); ++i) {
      k->data_as<float>()[i] = 0.01f * static_cast<float>(i % 17 + l);
      v->data_as<float>()[i] = 0.02f * static_cast<float>(i % 5 - l);
    }
    mem.layers.push_back(model::LayerMemoryKV{*k, *v, /*query_position=*/2});
  }
  std::vector<float> logits[2];
  for (int d = 0; d < 2; ++d) {
    Stack& st = d == 0 ? cpu_ : gpu_;
    model::MemoryPlacement placement(st.backend.get());
    auto placed = placement.Place(mem);
    ASSERT_TRUE(placed.ok()) << placed.status();
    auto cache = st.model->NewKvCache(model::KvCacheOptions{.n_ctx = 16});
    ASSERT_TRUE(cache.ok()) << cache.status();
    model::ForwardOptions fo;
    fo.memory = &*placed;
    const std::vector<model::TokenId> prompt = {5, 9, 2, 7};
    ASSERT_TRUE(st.model->Forward(prompt, cache->get(), fo).ok());
    const int64_t index_uploads = d == 1 ? st.double_->host_index_uploads : 0;
    const int64_t uploads = d == 1 ? st.double_->uploads : 0;
    auto r = st.model->Forward(std::vector<model::TokenId>{11}, cache->get(), fo);
    ASSERT_TRUE(r.ok()) << r.status();
    logits[d].assign(r->logits.data_as<const float>(),
                     r->logits.data_as<const float>() + r->logits.numel());
    if (d == 1) {
      EXPECT_EQ(st.double_->host_index_uploads - index_uploads, 1) << "only GetRows' token id";
      EXPECT_EQ(st.double_->uploads - uploads, 1) << "the position (the memory's went up before)";
    }
  }
  EXPECT_EQ(logits[1], logits[0]);
}

// A backend that fuses the decode step's op sequences (the CUDA backend; the double mimics it) gets
// five fused calls a layer — norm + Q/K/V, RoPE + the KV cache store, output projection +
// residual, norm + gate/up, SwiGLU + down projection + residual — and the logits of the plain
// sequence; an observer, which reads the intermediates the fused forms never write, gets the
// plain ops.
TEST_F(DeviceSessionTest, ADecodeStepTakesTheFusedOps) {
  std::vector<float> logits[3];
  for (int run = 0; run < 3; ++run) {
    gpu_.double_->fuses_decode_ops = run != 1;
    auto cache = gpu_.model->NewKvCache(model::KvCacheOptions{.n_ctx = 16});
    ASSERT_TRUE(cache.ok()) << cache.status();
    model::ForwardOptions fo;
    int64_t observed = 0;
    if (run == 2) fo.observer = [&](const model::Intermediate&) { ++observed; };
    const int64_t before = gpu_.double_->fused_calls;
    auto r = gpu_.model->Forward(std::vector<model::TokenId>{5, 9, 11}, cache->get(), fo);
    ASSERT_TRUE(r.ok()) << r.status();
    auto host = CopyToHost(*gpu_.backend, r->logits);
    ASSERT_TRUE(host.ok()) << host.status();
    logits[run].assign(host->data_as<const float>(), host->data_as<const float>() + host->numel());
    // Six calls a layer: Backend's default SwiGluMatMulAdd ends in a MatMulAdd call.
    EXPECT_EQ(gpu_.double_->fused_calls - before, run == 0 ? 6 * tt::kLayers : 0) << run;
    if (run == 2) {
      EXPECT_GT(observed, 0);
    }
  }
  gpu_.double_->fuses_decode_ops = true;
  EXPECT_EQ(logits[0], logits[1]);
  EXPECT_EQ(logits[2], logits[1]);
  // A prompt longer than a decode step gets the plain ops (no temporaries of its size).
  auto cache = gpu_.model->NewKvCache(model::KvCacheOptions{.n_ctx = 16});
  ASSERT_TRUE(cache.ok()) << cache.status();
  const int64_t before = gpu_.double_->fused_calls;
  ASSERT_TRUE(gpu_.model->Forward(std::vector<model::TokenId>(9, 5), cache->get(), {}).ok());
  EXPECT_EQ(gpu_.double_->fused_calls, before);
}

// The same scenarios on a real CUDA device (label gpu; skipped without one): the session runs and
// agrees with the CPU backend to float rounding (different kernels: no bit-for-bit equality).
TEST(DeviceSessionGpu, EveryMemoryModeOnCudaAgreesWithTheCpu) {
#if defined(MUNINN_HAVE_CUDA)
  auto cuda = CreateCudaBackend({});
  if (!cuda.ok()) GTEST_SKIP() << "no CUDA device present: " << cuda.status();
  Stack cpu(CpuBackend());
  Stack gpu(std::move(*cuda));
  auto cuda2 = CreateCudaBackend({});
  ASSERT_TRUE(cuda2.ok()) << cuda2.status();
  Stack split(std::move(*cuda2), /*host_layers=*/2);  // partial offload: layers 2-3 on the GPU
  LongContextOptions base;
  base.memory_layer = 1;
  base.retrieval_layers = {1, 3};
  base.chunk_tokens = 16;
  base.top_k = 2;
  base.local_window = 32;
  base.context.sink_tokens = 16;
  base.context.top_k = 2;
  base.knn.k = 8;
  base.knn.chunks = 4;
  base.knn.lambda = 0.5f;
  base.reread.top_k = 2;
  auto max_diff = [](const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    float d = 0.0f;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
      d = std::max(d, std::fabs(a[i] - b[i]));
    return d;
  };
  struct Case {
    const char* name;
    uint32_t modes;
    MemoryPosition memlong_position;
    ContextPosition context_position;
  };
  const Case cases[] = {
      {"memlong zero", kModeMemLong, MemoryPosition::kZero, ContextPosition::kConstant},
      {"memlong before_window", kModeMemLong, MemoryPosition::kBeforeWindow,
       ContextPosition::kConstant},
      {"reread", kModeReread, MemoryPosition::kZero, ContextPosition::kConstant},
      {"context constant", kModeContext, MemoryPosition::kZero, ContextPosition::kConstant},
      {"context contiguous", kModeContext, MemoryPosition::kZero, ContextPosition::kContiguous},
      {"knn", kModeKnnLm, MemoryPosition::kZero, ContextPosition::kConstant},
      {"all", kAllMemoryModes, MemoryPosition::kZero, ContextPosition::kConstant},
  };
  for (const Case& c : cases) {
    LongContextOptions o = base;
    o.modes = c.modes;
    o.memory_position = c.memlong_position;
    o.context.position = c.context_position;
    const Outcome a = RunScenario(cpu, o);
    const Outcome b = RunScenario(gpu, o);
    ASSERT_FALSE(b.begin_logits.empty()) << c.name;
    EXPECT_EQ(b.chunk_ids, a.chunk_ids) << c.name;
    EXPECT_EQ(b.excerpts, a.excerpts) << c.name;
    EXPECT_LT(max_diff(a.begin_logits, b.begin_logits), 2e-3f) << c.name;
    EXPECT_LT(max_diff(a.logprobs, b.logprobs), 2e-3f) << c.name;
    EXPECT_EQ(b.generated.size(), a.generated.size()) << c.name;
    std::printf("%-22s begin logits max |cpu - cuda| %.2e, log-probs %.2e, greedy tokens %s\n",
                c.name, max_diff(a.begin_logits, b.begin_logits), max_diff(a.logprobs, b.logprobs),
                a.generated == b.generated ? "equal" : "differ");
    const Outcome h = RunScenario(split, o);
    ASSERT_FALSE(h.begin_logits.empty()) << c.name << " (split)";
    EXPECT_EQ(h.chunk_ids, a.chunk_ids) << c.name << " (split)";
    EXPECT_LT(max_diff(a.begin_logits, h.begin_logits), 2e-3f) << c.name << " (split)";
    EXPECT_LT(max_diff(a.logprobs, h.logprobs), 2e-3f) << c.name << " (split)";
    std::printf("%-22s split 2+2: begin logits max |cpu - split| %.2e, greedy tokens %s\n", c.name,
                max_diff(a.begin_logits, h.begin_logits),
                a.generated == h.generated ? "equal" : "differ");
  }
#else
  GTEST_SKIP() << "built without MUNINN_CUDA";
#endif
}

// A KV cache in a dtype the device cannot attend over is refused when it is made, with a message
// that names the backend and the way out, instead of failing in the first forward.
TEST(DeviceKvCacheTest, ADtypeWithoutAttentionOnTheDeviceIsRefused) {
  auto device = std::make_unique<tt::DeviceDouble>(CpuBackend());
  model::KvCacheOptions o;
  o.n_ctx = 8;
  o.dtype = DType::kQ8_0;
  ASSERT_TRUE(model::KvCache::Create(device.get(), 2, 2, 64, o).ok());
  device->Refuse({OpKind::kAttention, DType::kQ8_0});
  const auto refused = model::KvCache::Create(device.get(), 2, 2, 64, o);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("cannot hold a q8_0 KV cache"), std::string::npos)
      << refused.status();
  o.dtype = DType::kF16;
  EXPECT_TRUE(model::KvCache::Create(device.get(), 2, 2, 64, o).ok());
}

}  // namespace
}  // namespace muninn::retriever
