// Context memory in the long-context session (ContextMemory, kModeContext) on the tiny
// 4-layer stack: every context layer stores and reads its own K/V, with sinks, three placements
// and two ways to pick chunks.
#include "muninn/retriever/context_memory.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "muninn/retriever/long_context_session.h"
#include "retriever/tiny_stack.h"

namespace muninn::retriever {
namespace {

using muninn::testing::ByteTokenizer;
using muninn::testing::KeywordEmbedder;
using muninn::testing::kHd;
using muninn::testing::kHeadsKv;
using muninn::testing::kLayers;
using muninn::testing::TinyModel;

// A bank whose chunks hold the K/V of `layers`.
std::unique_ptr<memory::MemoryBank> ContextBank(std::vector<int32_t> layers) {
  memory::MemoryBankOptions o;
  o.in_memory = true;
  o.dim = 4;
  o.kv_layers = std::move(layers);
  o.n_head_kv = kHeadsKv;
  o.head_dim = kHd;
  o.kv_dtype = DType::kF16;
  o.index_factory = "Flat";
  return std::move(*memory::MemoryBank::Open(o));
}

class ContextSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = std::move(*CreateCpuBackend({}));
    model_ = TinyModel(backend_.get());
    tok_ = ByteTokenizer();
    bank_ = ContextBank({0, 1, 2, 3});
    opts_.modes = kModeContext;
    opts_.chunk_tokens = 16;
    opts_.local_window = 64;
    opts_.kv_cache_dtype = DType::kF32;
    opts_.context.sink_tokens = 16;
    opts_.context.top_k = 2;
  }
  std::unique_ptr<LongContextSession> Session(const LongContextOptions& o) {
    auto s = LongContextSession::Create(model_.get(), tok_.get(), bank_.get(), &embedder_, o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  std::vector<model::TokenId> Ids(const std::string& text) {
    return tok_->Encode(text, false, false);
  }
  // log p(ids[i + 1] | ids[..i]) for i in [from, size - 1), full attention over all of `ids`.
  std::vector<float> FullLogProbs(const std::vector<model::TokenId>& ids, size_t from) {
    model::ForwardOptions fo;
    fo.all_logits = true;
    auto r = model_->Forward(ids, nullptr, fo);
    EXPECT_TRUE(r.ok()) << r.status();
    const int64_t V = r->logits.dim(1);
    std::vector<float> out;
    for (size_t i = from; i + 1 < ids.size(); ++i) {
      const float* row = r->logits.data_as<float>() + static_cast<int64_t>(i) * V;
      double mx = row[0], sum = 0;
      for (int64_t j = 1; j < V; ++j) mx = std::max(mx, double{row[j]});
      for (int64_t j = 0; j < V; ++j) sum += std::exp(row[j] - mx);
      out.push_back(static_cast<float>(row[ids[i + 1]] - mx - std::log(sum)));
    }
    return out;
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<model::Tokenizer> tok_;
  std::unique_ptr<memory::MemoryBank> bank_;
  KeywordEmbedder embedder_;
  LongContextOptions opts_;
};

const std::string kFirst = "abcdabcdaabbccdd";   // 16 bytes: one chunk
const std::string kSecond = "dcbaddccbbaaabcd";  // the scored window

// The oracle, end to end: memory = the previous window (one chunk, which is also the sink) with
// contiguous positions gives the log-probs of full attention over both windows (f16 bank: 2e-2).
TEST_F(ContextSessionTest, ContiguousOracleThroughTheSessionEqualsFullAttention) {
  LongContextOptions o = opts_;
  o.context.position = ContextPosition::kContiguous;
  auto session = Session(o);
  ASSERT_NE(session, nullptr);
  ASSERT_TRUE(session->IngestText(1, kFirst).ok());
  memory::SearchFilter f;
  f.doc_ids = {1};
  f.before_position = 16;
  auto got = session->TokenLogProbs(Ids(kSecond), "abcd", f);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(session->retrieved().hits.size(), 1u);
  std::vector<model::TokenId> both = Ids(kFirst + kSecond);
  const std::vector<float> want = FullLogProbs(both, 16);
  ASSERT_EQ(got->size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR((*got)[i], want[i], 2e-2) << i;
  // Without memory the same window scores differently (so the comparison can fail).
  LongContextOptions plain = o;
  plain.use_memory = false;
  auto p = Session(plain);
  auto lp = p->TokenLogProbs(Ids(kSecond), "abcd");
  ASSERT_TRUE(lp.ok());
  double diff = 0;
  for (size_t i = 0; i < want.size(); ++i) diff += std::fabs((*lp)[i] - want[i]);
  EXPECT_GT(diff, 0.1);
}

// Contextual ingest: a call's group of chunks runs as one pass, so with memory = the sink chunk
// and the chunk after it (contiguous), the next window again equals full attention over all of
// it. Chunks ingested alone (the default) do not: the second chunk's K/V never saw the first.
TEST_F(ContextSessionTest, ContextualIngestKeepsEachChunkInItsDocumentsContext) {
  const std::string doc = kFirst + "bbbbbbbbbbbbbbbb";
  std::vector<model::TokenId> all = Ids(doc + kSecond);
  const std::vector<float> want = FullLogProbs(all, 32);
  for (bool contextual : {true, false}) {
    SCOPED_TRACE(contextual ? "contextual" : "alone");
    bank_ = ContextBank({0, 1, 2, 3});
    LongContextOptions o = opts_;
    o.context.position = ContextPosition::kContiguous;
    o.context.top_k = 1;
    o.context.contextual_ingest = contextual;
    auto session = Session(o);
    ASSERT_NE(session, nullptr);
    ASSERT_TRUE(session->IngestText(1, doc).ok());
    memory::SearchFilter f;
    f.doc_ids = {1};
    auto got = session->TokenLogProbs(Ids(kSecond), "bbbb", f);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(session->retrieved().hits.size(), 2u);
    ASSERT_EQ(got->size(), want.size());
    double max_diff = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      max_diff = std::max(max_diff, static_cast<double>(std::fabs((*got)[i] - want[i])));
    }
    if (contextual) {
      EXPECT_LT(max_diff, 2e-2);
    } else {
      EXPECT_GT(max_diff, 5e-2);
    }
  }
}

// Sinks only (top_k = 0): the first 8 tokens, cut from the first 16-token chunk, are in memory at
// contiguous positions. Causal attention makes their K/V independent of the cut-off tail, so this
// equals full attention over [first 8 tokens ; window].
TEST_F(ContextSessionTest, SinksAreTheDocumentsFirstTokensInEveryLayer) {
  LongContextOptions o = opts_;
  o.context.position = ContextPosition::kContiguous;
  o.context.sink_tokens = 8;
  o.context.top_k = 0;
  auto session = Session(o);
  ASSERT_NE(session, nullptr);
  ASSERT_TRUE(session->IngestText(1, kFirst + "cccccccccccccccc").ok());
  memory::SearchFilter f;
  f.doc_ids = {1};
  f.before_position = 32;
  auto got = session->TokenLogProbs(Ids(kSecond), "cccc", f);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(session->retrieved().hits.size(), 1u);
  EXPECT_EQ(session->retrieved().hits[0].position, 0);
  EXPECT_EQ(session->retrieved().n_tokens(), 8);  // the sinks, cut from the 16-token chunk
  std::vector<model::TokenId> seq = Ids(kFirst.substr(0, 8) + kSecond);
  const std::vector<float> want = FullLogProbs(seq, 8);
  ASSERT_EQ(got->size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR((*got)[i], want[i], 2e-2) << i;
}

// Constant distance: the session's logits equal a direct forward whose memory holds, per layer,
// that layer's slice of the fetched chunk K/V, unrotated, with query_position = local_window.
TEST_F(ContextSessionTest, ConstantPositionMatchesAHandBuiltMemory) {
  LongContextOptions o = opts_;
  o.context.position = ContextPosition::kConstant;
  o.context.layers = {3, 1};
  bank_ = ContextBank({1, 3});
  auto session = Session(o);
  ASSERT_NE(session, nullptr);
  ASSERT_TRUE(session->IngestText(1, kFirst + "bbbbbbbbbbbbbbbbcccccccccccccccc").ok());
  memory::SearchFilter f;
  f.doc_ids = {1};
  ASSERT_TRUE(session->Begin(Ids("xyz"), "cccc", f).ok());
  const std::vector<float> got(session->logits().begin(), session->logits().end());
  // Sink chunk (position 0) + the two best by the embedder: all three chunks.
  std::vector<memory::ChunkId> ids;
  for (const auto& h : session->retrieved().hits) ids.push_back(h.id);
  ASSERT_EQ(ids.size(), 3u);
  auto kv = bank_->FetchKV(ids, DType::kF32);  // [2 · kHeadsKv, M, kHd], layers 1 then 3
  ASSERT_TRUE(kv.ok()) << kv.status();
  model::MemoryKV mem;
  mem.layers.resize(kLayers);
  for (int li = 0; li < 2; ++li) {
    auto k = kv->k.Slice(0, li * kHeadsKv, (li + 1) * kHeadsKv);
    auto v = kv->v.Slice(0, li * kHeadsKv, (li + 1) * kHeadsKv);
    ASSERT_TRUE(k.ok() && v.ok());
    model::LayerMemoryKV& lm = mem.layers[li == 0 ? 1 : 3];
    lm.k = *k->Transpose(0, 1);
    lm.v = *v->Transpose(0, 1);
    lm.query_position = o.local_window;
  }
  model::ForwardOptions fo;
  fo.memory = &mem;
  auto direct = model_->Forward(Ids("xyz"), nullptr, fo);
  ASSERT_TRUE(direct.ok()) << direct.status();
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], direct->logits.data_as<float>()[i], 1e-4f) << i;
  }
  // Zero placement (MemLong's) differs from the constant distance.
  LongContextOptions z = o;
  z.context.position = ContextPosition::kZero;
  auto zs = Session(z);
  ASSERT_TRUE(zs->Begin(Ids("xyz"), "cccc", f).ok());  // reads the same bank
  double diff = 0;
  for (size_t i = 0; i < got.size(); ++i) diff += std::fabs(got[i] - zs->logits()[i]);
  EXPECT_GT(diff, 1e-4);
}

TEST_F(ContextSessionTest, RepresentativeKeysPickChunksPerLayer) {
  LongContextOptions o = opts_;
  o.context.selection = ChunkSelection::kRepresentativeKeys;
  o.context.representative_keys = 3;
  o.context.top_k = 1;
  auto session = Session(o);
  ASSERT_NE(session, nullptr);
  const std::string doc = kFirst + "bbbbbbbbbbbbbbbbccccccccccccccccdddddddddddddddd";
  ASSERT_TRUE(session->IngestText(1, doc).ok());
  memory::SearchFilter f;
  f.doc_ids = {1};
  f.before_position = 48;  // chunks at 0 (the sink), 16, 32
  auto lp = session->TokenLogProbs(Ids(kSecond), "", f);
  ASSERT_TRUE(lp.ok()) << lp.status();
  const auto& hits = session->retrieved().hits;
  ASSERT_GE(hits.size(), 2u);  // the sink and at least one chosen chunk
  ASSERT_LE(hits.size(), 3u);
  for (const auto& h : hits) EXPECT_LT(h.position, 48);
  EXPECT_EQ(hits[0].position, 0);
  // A session that did not ingest the chunks has no representative keys for them.
  auto other = Session(o);
  auto st = other->TokenLogProbs(Ids(kSecond), "", f).status();
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("embedder"), std::string::npos) << st;
}

// Representative keys of an ingested window, against a float64 recomputation: per layer, the R
// tokens that received the most causal attention (summed over heads) from the window's later
// tokens; the stored keys are those tokens' pre-RoPE keys.
TEST_F(ContextSessionTest, RepresentativeKeysAreTheMostAttendedTokens) {
  ContextMemoryOptions co;
  co.selection = ChunkSelection::kRepresentativeKeys;
  co.representative_keys = 3;
  co.layers = {0, 2};
  const std::vector<int32_t> bank_layers = {0, 1, 2, 3};
  auto cm = ContextMemory::Create(model_.get(), bank_.get(), &embedder_, co, bank_layers, 64);
  ASSERT_TRUE(cm.ok()) << cm.status();
  const std::vector<model::TokenId> window = Ids("the cat sat, the cat ran");
  const int64_t T = static_cast<int64_t>(window.size());
  auto w = (*cm)->Ingest(window);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->k.shape(), (Shape{4 * kHeadsKv, T, kHd}));
  ASSERT_EQ(w->representative.size(), static_cast<size_t>(2 * 3 * kHeadsKv * kHd));

  // Reference: rotated q and pre-RoPE k of each layer from an observed plain forward.
  std::vector<std::vector<float>> q(kLayers), k(kLayers);
  model::ForwardOptions fo;
  fo.compute_logits = false;
  fo.observer = [&](const model::Intermediate& im) {
    if (im.name != "q" && im.name != "k_pre_rope") return;
    auto c = im.value.Contiguous();
    ASSERT_TRUE(c.ok());
    auto& dst = im.name == "q" ? q[static_cast<size_t>(im.layer)] : k[static_cast<size_t>(im.layer)];
    dst.assign(c->data_as<float>(), c->data_as<float>() + c->numel());
  };
  ASSERT_TRUE(model_->Forward(window, nullptr, fo).ok());
  const int64_t n_head = muninn::testing::kHeads, G = n_head / kHeadsKv;
  for (int li = 0; li < 2; ++li) {
    const int layer = co.layers[static_cast<size_t>(li)];
    auto kt = Tensor::FromVector(Shape{T, kHeadsKv, kHd}, k[static_cast<size_t>(layer)]);
    ASSERT_TRUE(kt.ok());
    auto k_rot = model::RotateMemoryKeys(backend_.get(), model_->config().rope, *kt, 0);
    ASSERT_TRUE(k_rot.ok());
    std::vector<double> received(static_cast<size_t>(T), 0.0);
    for (int64_t h = 0; h < n_head; ++h) {
      for (int64_t t = 1; t < T; ++t) {
        std::vector<double> p(static_cast<size_t>(t + 1));
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int64_t i = 0; i < kHd; ++i) {
            dot += double{q[static_cast<size_t>(layer)][static_cast<size_t>((t * n_head + h) * kHd + i)]} *
                   k_rot->data_as<float>()[(j * kHeadsKv + h / G) * kHd + i];
          }
          p[static_cast<size_t>(j)] = dot / std::sqrt(double{kHd});
          mx = std::max(mx, p[static_cast<size_t>(j)]);
        }
        for (double& x : p) sum += (x = std::exp(x - mx));
        for (int64_t j = 0; j < t; ++j) received[static_cast<size_t>(j)] += p[static_cast<size_t>(j)] / sum;
      }
    }
    std::vector<int64_t> order(static_cast<size_t>(T));
    for (int64_t j = 0; j < T; ++j) order[static_cast<size_t>(j)] = j;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return received[static_cast<size_t>(a)] > received[static_cast<size_t>(b)];
    });
    for (int r = 0; r < 3; ++r) {
      const int64_t j = order[static_cast<size_t>(r)];
      for (int64_t g = 0; g < kHeadsKv; ++g) {
        for (int64_t i = 0; i < kHd; ++i) {
          ASSERT_EQ(w->representative[static_cast<size_t>(((li * 3 + r) * kHeadsKv + g) * kHd + i)],
                    k[static_cast<size_t>(layer)][static_cast<size_t>((j * kHeadsKv + g) * kHd + i)])
              << "layer " << layer << " rank " << r << " token " << j;
        }
      }
    }
    // The stacked K holds every bank layer in order: layer `layer` at rows layer·n_kv...
    for (int64_t g = 0; g < kHeadsKv; ++g) {
      for (int64_t t = 0; t < T; ++t) {
        ASSERT_EQ(w->k.data_as<float>()[((layer * kHeadsKv + g) * T + t) * kHd],
                  k[static_cast<size_t>(layer)][static_cast<size_t>((t * kHeadsKv + g) * kHd)]);
      }
    }
  }
}

TEST_F(ContextSessionTest, GenerationOverflowsIntoContextMemory) {
  LongContextOptions o = opts_;
  o.local_window = 24;
  o.context.sink_tokens = 4;
  auto session = Session(o);
  ASSERT_NE(session, nullptr);
  ASSERT_TRUE(session->Begin(Ids("abcdabcdabcdabcdabcd"), "abcd").ok());
  auto sampler = *model::Sampler::Create(model::SamplerOptions::Greedy());
  GenerateOptions go;
  go.max_tokens = 40;
  go.stop_at_eos = false;
  auto r = session->Generate(go, sampler);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tokens.size(), 40u);
  int64_t overflow_tokens = 0;
  for (const auto& c : bank_->ListChunks()) overflow_tokens += c.n_tokens;
  EXPECT_EQ(overflow_tokens + static_cast<int64_t>(session->window_tokens().size()), 20 + 39);
  EXPECT_FALSE(session->retrieved().hits.empty());  // the overflow's sinks at least
}

TEST_F(ContextSessionTest, BadOptionsAndBanksAreErrors) {
  LongContextOptions o = opts_;
  o.context.layers = {0, kLayers};
  EXPECT_EQ(LongContextSession::Create(model_.get(), tok_.get(), bank_.get(), &embedder_, o)
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  // A bank holding only layers 1 and 3 cannot serve context layers 0..3.
  o = opts_;
  auto small = ContextBank({1, 3});
  auto s = LongContextSession::Create(model_.get(), tok_.get(), small.get(), &embedder_, o);
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("layer 0"), std::string::npos) << s.status();
}

}  // namespace
}  // namespace muninn::retriever
