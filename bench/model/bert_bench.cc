// BertEncoder throughput: sentences/s for 128-token texts at batch 1 and 16, on the CPU backend.
//
// The encoder has all-MiniLM-L6-v2's shape (6 layers, 384 wide, 12 heads, 1536 ff, 30522 vocab,
// f32 weights) with seeded random weights, so the figure does not depend on the model folder
// being present; the arithmetic is the same as with the real weights.
#include <benchmark/benchmark.h>

#include <memory>
#include <random>
#include <vector>

#include "muninn/core/cpu_backend.h"
#include "muninn/core/thread_pool.h"
#include "muninn/model/bert_encoder.h"

namespace muninn::model {
namespace {

constexpr int64_t kTokens = 128;

BertConfig MiniLmConfig() {
  BertConfig c;
  c.n_vocab = 30522;
  c.n_embd = 384;
  c.n_layer = 6;
  c.n_head = 12;
  c.n_ff = 1536;
  c.n_pos = 512;
  c.n_token_type = 2;
  c.max_tokens = 256;
  return c;
}

Tensor Random(std::mt19937& rng, const Shape& shape, float center, float spread) {
  auto t = Tensor::Empty(DType::kF32, shape);
  MUNINN_CHECK(t.ok()) << t.status();
  std::uniform_real_distribution<float> u(center - spread, center + spread);
  float* p = t->data_as<float>();
  for (int64_t i = 0; i < t->numel(); ++i) p[i] = u(rng);
  return *t;
}

BertWeights RandomWeights(const BertConfig& c) {
  std::mt19937 rng(42);
  const int64_t d = c.n_embd;
  const int64_t ff = c.n_ff;
  const float s = 0.05f;
  BertWeights w;
  w.word_embd = Random(rng, Shape{c.n_vocab, d}, 0, s);
  w.pos_embd = Random(rng, Shape{c.n_pos, d}, 0, s);
  w.type_embd = Random(rng, Shape{c.n_token_type, d}, 0, s);
  w.emb_ln_w = Random(rng, Shape{d}, 1, s);
  w.emb_ln_b = Random(rng, Shape{d}, 0, s);
  for (int32_t i = 0; i < c.n_layer; ++i) {
    BertLayerWeights l;
    l.wq = Random(rng, Shape{d, d}, 0, s);
    l.wk = Random(rng, Shape{d, d}, 0, s);
    l.wv = Random(rng, Shape{d, d}, 0, s);
    l.wo = Random(rng, Shape{d, d}, 0, s);
    l.w_up = Random(rng, Shape{ff, d}, 0, s);
    l.w_down = Random(rng, Shape{d, ff}, 0, s);
    for (Tensor* b : {&l.bq, &l.bk, &l.bv, &l.bo, &l.attn_ln_b, &l.b_down, &l.ffn_ln_b}) {
      *b = Random(rng, Shape{d}, 0, s);
    }
    l.b_up = Random(rng, Shape{ff}, 0, s);
    l.attn_ln_w = Random(rng, Shape{d}, 1, s);
    l.ffn_ln_w = Random(rng, Shape{d}, 1, s);
    w.layers.push_back(std::move(l));
  }
  return w;
}

// Args: texts per Embed call, threads.
void BM_BertEmbed128(benchmark::State& state) {
  const auto batch = static_cast<size_t>(state.range(0));
  ThreadPool pool(static_cast<int>(state.range(1)));
  CpuBackendOptions bo;
  bo.pool = &pool;
  auto backend = CreateCpuBackend(bo);
  MUNINN_CHECK(backend.ok()) << backend.status();
  BertEncoderOptions eo;
  eo.backend = backend->get();
  const BertConfig config = MiniLmConfig();
  auto enc = BertEncoder::Create(eo, config, RandomWeights(config), nullptr);
  MUNINN_CHECK(enc.ok()) << enc.status();

  std::mt19937 rng(7);
  std::uniform_int_distribution<TokenId> id(1000, config.n_vocab - 1);
  std::vector<std::vector<TokenId>> texts(batch);
  for (auto& t : texts) {
    t.resize(kTokens);
    for (auto& x : t) x = id(rng);
    t.front() = 101;  // [CLS]
    t.back() = 102;   // [SEP]
  }
  for (auto _ : state) {
    auto emb = (*enc)->EmbedIds(texts);
    MUNINN_CHECK(emb.ok()) << emb.status();
    benchmark::DoNotOptimize(emb->data());
  }
  state.counters["sentences/s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * static_cast<int64_t>(batch)),
      benchmark::Counter::kIsRate);
  state.counters["tokens/s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * static_cast<int64_t>(batch) * kTokens),
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_BertEmbed128)
    ->ArgNames({"batch", "threads"})
    ->Args({1, 1})
    ->Args({1, 2})
    ->Args({16, 1})
    ->Args({16, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace muninn::model
