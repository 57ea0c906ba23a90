// A tiny random llama (n_embd 64, 2 layers, GQA 4/2, vocab 100) written by the test itself as a
// GGUF file (Q/K rows permuted the way llama.cpp's converter does) and as a Hugging Face folder
// (config.json + model.safetensors, rotate-half order), run through the real loader and Model, and
// compared with a float64 reference forward written here from the Llama definition. Both formats
// must agree with the reference and with each other. No weights are needed.
//
// Tolerances: f32 weights, f32 activations and an f32 KV cache leave only float32 rounding
// (≈1e-6 relative per op, a few hundred ops deep), so logits must match to 1e-4·(1 + |ref|).
// An f16 KV cache rounds K/V to 11 significant bits: 1e-2·(1 + |ref|).
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <unistd.h>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "muninn/core/cpu_backend.h"
#include "muninn/model/generator.h"
#include "muninn/model/gguf_writer.h"
#include "muninn/model/model_loader.h"
#include "muninn/model/safetensors_writer.h"
#include "muninn/model/sampler.h"
#include "muninn/model/tokenizer_factory.h"

namespace muninn::model {
namespace {

constexpr int kVocab = 100, kEmbd = 64, kLayers = 2, kHeads = 4, kHeadsKv = 2, kHd = 16, kFf = 96;
constexpr double kBase = 10000.0, kEps = 1e-5;

using Mat = std::vector<double>;  // row-major

struct RefLayer {
  Mat attn_norm, wq, wk, wv, wo, ffn_norm, gate, up, down;
};
struct RefModel {
  Mat embd, out_norm, out;
  std::vector<RefLayer> layers;
};

Mat Random(std::mt19937_64& rng, size_t n, double scale, double offset = 0.0) {
  // Uniform from the raw 64-bit stream (std:: distributions differ between libraries).
  Mat m(n);
  for (double& v : m) v = offset + scale * (2.0 * static_cast<double>(rng() >> 11) * 0x1.0p-53 - 1.0);
  return m;
}

RefModel MakeRef(uint64_t seed) {
  std::mt19937_64 rng(seed);
  RefModel r;
  r.embd = Random(rng, kVocab * kEmbd, 1.0);
  r.out_norm = Random(rng, kEmbd, 0.1, 1.0);
  r.out = Random(rng, kVocab * kEmbd, 0.25);
  for (int l = 0; l < kLayers; ++l) {
    RefLayer L;
    const double s_in = std::sqrt(3.0 / kEmbd), s_ff = std::sqrt(3.0 / kFf);
    L.attn_norm = Random(rng, kEmbd, 0.1, 1.0);
    L.wq = Random(rng, kHeads * kHd * kEmbd, 2 * s_in);
    L.wk = Random(rng, kHeadsKv * kHd * kEmbd, 2 * s_in);
    L.wv = Random(rng, kHeadsKv * kHd * kEmbd, s_in);
    L.wo = Random(rng, kEmbd * kHeads * kHd, s_in);
    L.ffn_norm = Random(rng, kEmbd, 0.1, 1.0);
    L.gate = Random(rng, kFf * kEmbd, s_in);
    L.up = Random(rng, kFf * kEmbd, s_in);
    L.down = Random(rng, kEmbd * kFf, s_ff);
    r.layers.push_back(std::move(L));
  }
  return r;
}

// y[n_out] = W[n_out, n_in] · x
Mat MatVec(const Mat& w, const double* x, int n_out, int n_in) {
  Mat y(static_cast<size_t>(n_out), 0.0);
  for (int o = 0; o < n_out; ++o) {
    double s = 0.0;
    for (int i = 0; i < n_in; ++i) s += w[static_cast<size_t>(o) * n_in + i] * x[i];
    y[static_cast<size_t>(o)] = s;
  }
  return y;
}

Mat RmsNorm(const double* x, const Mat& w) {
  double ss = 0.0;
  for (int i = 0; i < kEmbd; ++i) ss += x[i] * x[i];
  const double inv = 1.0 / std::sqrt(ss / kEmbd + kEps);
  Mat y(kEmbd);
  for (int i = 0; i < kEmbd; ++i) y[static_cast<size_t>(i)] = x[i] * inv * w[static_cast<size_t>(i)];
  return y;
}

// HF rotate-half RoPE on one head.
void Rope(double* x, int64_t pos) {
  for (int i = 0; i < kHd / 2; ++i) {
    const double a = static_cast<double>(pos) * std::pow(kBase, -2.0 * i / kHd);
    const double x0 = x[i], x1 = x[i + kHd / 2];
    x[i] = x0 * std::cos(a) - x1 * std::sin(a);
    x[i + kHd / 2] = x1 * std::cos(a) + x0 * std::sin(a);
  }
}

struct RefMemory {  // per layer, empty = none: [M, kHeadsKv, kHd]
  std::vector<Mat> k, v;
  int m = 0;
  // >= 0: memory keys are scored with the pre-RoPE queries rotated at this one position.
  int64_t query_position = -1;
};

struct RefOut {
  std::vector<Mat> logits;                    // [T][V]
  std::vector<std::vector<Mat>> hidden;       // [layer][T][E]
  std::vector<Mat> k_pre_rope0;               // layer 0: [T][n_kv·hd]
};

RefOut RefForward(const RefModel& r, const std::vector<TokenId>& ids, int64_t start_pos,
                  const RefMemory* mem = nullptr) {
  const int T = static_cast<int>(ids.size());
  std::vector<Mat> h(static_cast<size_t>(T));
  for (int t = 0; t < T; ++t) {
    h[t].assign(r.embd.begin() + ids[t] * kEmbd, r.embd.begin() + (ids[t] + 1) * kEmbd);
  }
  RefOut out;
  out.hidden.resize(kLayers);
  for (int l = 0; l < kLayers; ++l) {
    const RefLayer& L = r.layers[static_cast<size_t>(l)];
    std::vector<Mat> q(T), k(T), v(T), qm(T);
    for (int t = 0; t < T; ++t) {
      Mat x = RmsNorm(h[t].data(), L.attn_norm);
      q[t] = MatVec(L.wq, x.data(), kHeads * kHd, kEmbd);
      k[t] = MatVec(L.wk, x.data(), kHeadsKv * kHd, kEmbd);
      v[t] = MatVec(L.wv, x.data(), kHeadsKv * kHd, kEmbd);
      if (l == 0) out.k_pre_rope0.push_back(k[t]);
      qm[t] = q[t];  // the memory's queries: rotated at the constant position, or the ordinary q
      if (mem != nullptr && mem->query_position >= 0) {
        for (int hh = 0; hh < kHeads; ++hh) Rope(&qm[t][hh * kHd], mem->query_position);
      }
      for (int hh = 0; hh < kHeads; ++hh) Rope(&q[t][hh * kHd], start_pos + t);
      for (int hh = 0; hh < kHeadsKv; ++hh) Rope(&k[t][hh * kHd], start_pos + t);
      if (mem == nullptr || mem->query_position < 0) qm[t] = q[t];
    }
    const bool has_mem = mem != nullptr && !mem->k[static_cast<size_t>(l)].empty();
    const int M = has_mem ? mem->m : 0;
    for (int t = 0; t < T; ++t) {
      Mat att(kHeads * kHd, 0.0);
      for (int hh = 0; hh < kHeads; ++hh) {
        const int g = hh / (kHeads / kHeadsKv);
        std::vector<double> s;
        std::vector<const double*> vals;
        auto score = [&](const Mat& query, const double* key) {
          double d = 0.0;
          for (int i = 0; i < kHd; ++i) d += query[hh * kHd + i] * key[i];
          return d / std::sqrt(double{kHd});
        };
        for (int m = 0; m < M; ++m) {
          s.push_back(score(qm[t], &mem->k[static_cast<size_t>(l)][(m * kHeadsKv + g) * kHd]));
          vals.push_back(&mem->v[static_cast<size_t>(l)][(m * kHeadsKv + g) * kHd]);
        }
        for (int j = 0; j <= t; ++j) {
          s.push_back(score(q[t], &k[j][g * kHd]));
          vals.push_back(&v[j][g * kHd]);
        }
        double mx = -1e300, sum = 0.0;
        for (double x : s) mx = std::max(mx, x);
        for (double& x : s) sum += (x = std::exp(x - mx));
        for (size_t j = 0; j < s.size(); ++j) {
          for (int i = 0; i < kHd; ++i) att[hh * kHd + i] += s[j] / sum * vals[j][i];
        }
      }
      Mat o = MatVec(L.wo, att.data(), kEmbd, kHeads * kHd);
      for (int i = 0; i < kEmbd; ++i) h[t][i] += o[i];
      Mat x = RmsNorm(h[t].data(), L.ffn_norm);
      Mat g = MatVec(L.gate, x.data(), kFf, kEmbd);
      Mat u = MatVec(L.up, x.data(), kFf, kEmbd);
      for (int i = 0; i < kFf; ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      Mat d = MatVec(L.down, g.data(), kEmbd, kFf);
      for (int i = 0; i < kEmbd; ++i) h[t][i] += d[i];
    }
    out.hidden[static_cast<size_t>(l)] = h;
  }
  for (int t = 0; t < T; ++t) {
    Mat x = RmsNorm(h[t].data(), r.out_norm);
    out.logits.push_back(MatVec(r.out, x.data(), kVocab, kEmbd));
  }
  return out;
}

Tensor ToTensor(const Mat& m, const Shape& shape) {
  std::vector<float> f(m.begin(), m.end());
  auto t = Tensor::FromVector(shape, f);
  MUNINN_CHECK(t.ok()) << t.status();
  return std::move(t).value();
}

// llama.cpp's converter order: within each head, GGUF row 2i = HF row i, 2i+1 = HF row i + hd/2.
Mat PermuteQK(const Mat& w, int n_head) {
  Mat p(w.size());
  for (int h = 0; h < n_head; ++h) {
    for (int i = 0; i < kHd / 2; ++i) {
      for (int c = 0; c < kEmbd; ++c) {
        p[((h * kHd) + 2 * i) * kEmbd + c] = w[((h * kHd) + i) * kEmbd + c];
        p[((h * kHd) + 2 * i + 1) * kEmbd + c] = w[((h * kHd) + i + kHd / 2) * kEmbd + c];
      }
    }
  }
  return p;
}

void WriteGguf(const RefModel& r, const std::string& path) {
  GgufWriter w;
  w.SetMetadata("general.architecture", MetadataValue::String("llama"));
  w.SetMetadata("llama.block_count", MetadataValue::U32(kLayers));
  w.SetMetadata("llama.context_length", MetadataValue::U32(256));
  w.SetMetadata("llama.embedding_length", MetadataValue::U32(kEmbd));
  w.SetMetadata("llama.feed_forward_length", MetadataValue::U32(kFf));
  w.SetMetadata("llama.attention.head_count", MetadataValue::U32(kHeads));
  w.SetMetadata("llama.attention.head_count_kv", MetadataValue::U32(kHeadsKv));
  w.SetMetadata("llama.rope.freq_base", MetadataValue::F32(static_cast<float>(kBase)));
  w.SetMetadata("llama.rope.dimension_count", MetadataValue::U32(kHd));
  w.SetMetadata("llama.attention.layer_norm_rms_epsilon",
                MetadataValue::F32(static_cast<float>(kEps)));
  auto add = [&](const std::string& name, const Mat& m, const Shape& s) {
    ASSERT_TRUE(w.AddTensor(name, ToTensor(m, s)).ok()) << name;
  };
  add("token_embd.weight", r.embd, Shape{kVocab, kEmbd});
  add("output_norm.weight", r.out_norm, Shape{kEmbd});
  add("output.weight", r.out, Shape{kVocab, kEmbd});
  for (int l = 0; l < kLayers; ++l) {
    const RefLayer& L = r.layers[static_cast<size_t>(l)];
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", L.attn_norm, Shape{kEmbd});
    add(p + "attn_q.weight", PermuteQK(L.wq, kHeads), Shape{kHeads * kHd, kEmbd});
    add(p + "attn_k.weight", PermuteQK(L.wk, kHeadsKv), Shape{kHeadsKv * kHd, kEmbd});
    add(p + "attn_v.weight", L.wv, Shape{kHeadsKv * kHd, kEmbd});
    add(p + "attn_output.weight", L.wo, Shape{kEmbd, kHeads * kHd});
    add(p + "ffn_norm.weight", L.ffn_norm, Shape{kEmbd});
    add(p + "ffn_gate.weight", L.gate, Shape{kFf, kEmbd});
    add(p + "ffn_up.weight", L.up, Shape{kFf, kEmbd});
    add(p + "ffn_down.weight", L.down, Shape{kEmbd, kFf});
  }
  ASSERT_TRUE(w.WriteFile(path).ok());
}

void WriteHf(const RefModel& r, const std::string& dir) {
  std::filesystem::create_directories(dir);
  nlohmann::json config = {
      {"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
      {"vocab_size", kVocab}, {"hidden_size", kEmbd}, {"num_hidden_layers", kLayers},
      {"num_attention_heads", kHeads}, {"num_key_value_heads", kHeadsKv},
      {"intermediate_size", kFf}, {"max_position_embeddings", 256}, {"rms_norm_eps", kEps},
      {"rope_theta", kBase}, {"tie_word_embeddings", false}, {"hidden_act", "silu"}};
  std::ofstream(dir + "/config.json") << config.dump(1);
  SafetensorsWriter w;
  auto add = [&](const std::string& name, const Mat& m, const Shape& s) {
    ASSERT_TRUE(w.AddTensor(name, ToTensor(m, s)).ok()) << name;
  };
  add("model.embed_tokens.weight", r.embd, Shape{kVocab, kEmbd});
  add("model.norm.weight", r.out_norm, Shape{kEmbd});
  add("lm_head.weight", r.out, Shape{kVocab, kEmbd});
  for (int l = 0; l < kLayers; ++l) {
    const RefLayer& L = r.layers[static_cast<size_t>(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", L.attn_norm, Shape{kEmbd});
    add(p + "self_attn.q_proj.weight", L.wq, Shape{kHeads * kHd, kEmbd});
    add(p + "self_attn.k_proj.weight", L.wk, Shape{kHeadsKv * kHd, kEmbd});
    add(p + "self_attn.v_proj.weight", L.wv, Shape{kHeadsKv * kHd, kEmbd});
    add(p + "self_attn.o_proj.weight", L.wo, Shape{kEmbd, kHeads * kHd});
    add(p + "post_attention_layernorm.weight", L.ffn_norm, Shape{kEmbd});
    add(p + "mlp.gate_proj.weight", L.gate, Shape{kFf, kEmbd});
    add(p + "mlp.up_proj.weight", L.up, Shape{kFf, kEmbd});
    add(p + "mlp.down_proj.weight", L.down, Shape{kEmbd, kFf});
  }
  ASSERT_TRUE(w.WriteFile(dir + "/model.safetensors").ok());
}

void ExpectRowNear(const float* got, const Mat& want, double tol, const std::string& what) {
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * (1.0 + std::abs(want[i]))) << what << " index " << i;
  }
}

class TinyLlamaTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ref_ = new RefModel(MakeRef(20240611));
    const std::string dir = ::testing::TempDir() + "/muninn_tiny_llama_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir);
    gguf_path_ = new std::string(dir + "/tiny.gguf");
    hf_dir_ = new std::string(dir + "/hf");
    WriteGguf(*ref_, *gguf_path_);
    WriteHf(*ref_, *hf_dir_);
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    std::filesystem::remove_all(std::filesystem::path(*gguf_path_).parent_path(), ec);
    delete ref_;
    delete gguf_path_;
    delete hf_dir_;
  }
  void SetUp() override {
    CpuBackendOptions bo;
    auto b = CreateCpuBackend(bo);
    ASSERT_TRUE(b.ok());
    backend_ = std::move(b).value();
  }
  LoadedModel Load(const std::string& path) {
    LoadModelOptions lo;
    lo.load_tokenizer = false;
    auto m = LoadModel(path, backend_.get(), lo);
    MUNINN_CHECK(m.ok()) << m.status();
    return std::move(m).value();
  }
  static KvCacheOptions CacheOpts(DType dtype) {
    KvCacheOptions o;
    o.n_ctx = 32;
    o.dtype = dtype;
    return o;
  }

  static RefModel* ref_;
  static std::string* gguf_path_;
  static std::string* hf_dir_;
  std::unique_ptr<Backend> backend_;
};

RefModel* TinyLlamaTest::ref_ = nullptr;
std::string* TinyLlamaTest::gguf_path_ = nullptr;
std::string* TinyLlamaTest::hf_dir_ = nullptr;

const std::vector<TokenId> kPrompt = {3, 17, 99, 0, 42, 42, 7};

TEST_F(TinyLlamaTest, GgufAndSafetensorsMatchFloat64Reference) {
  const RefOut want = RefForward(*ref_, kPrompt, 0);
  std::vector<std::vector<float>> per_format;
  for (const std::string& path : {*gguf_path_, *hf_dir_}) {
    SCOPED_TRACE(path);
    LoadedModel m = Load(path);
    EXPECT_EQ(m.model->config().rope.layout,
              path == *gguf_path_ ? RopeLayout::kInterleaved : RopeLayout::kHalves);
    auto cache = m.model->NewKvCache(CacheOpts(DType::kF32));
    ASSERT_TRUE(cache.ok());
    ForwardOptions fo;
    fo.all_logits = true;
    auto res = m.model->Forward(kPrompt, cache->get(), fo);
    ASSERT_TRUE(res.ok()) << res.status();
    ASSERT_EQ(res->logits.shape(), (Shape{static_cast<int64_t>(kPrompt.size()), kVocab}));
    for (size_t t = 0; t < kPrompt.size(); ++t) {
      ExpectRowNear(res->logits.data_as<float>() + t * kVocab, want.logits[t], 1e-4,
                    "position " + std::to_string(t));
    }
    per_format.emplace_back(res->logits.data_as<float>(),
                            res->logits.data_as<float>() + kPrompt.size() * kVocab);
    EXPECT_EQ((*cache)->n_past(), static_cast<int64_t>(kPrompt.size()));
  }
  for (size_t i = 0; i < per_format[0].size(); ++i) {
    ASSERT_NEAR(per_format[0][i], per_format[1][i], 1e-4 * (1.0 + std::abs(per_format[1][i])));
  }
}

TEST_F(TinyLlamaTest, PrefillThenDecodeMatchesReference) {
  const RefOut want = RefForward(*ref_, kPrompt, 0);
  for (DType dtype : {DType::kF32, DType::kF16}) {
    const double tol = dtype == DType::kF32 ? 1e-4 : 1e-2;
    for (const std::string& path : {*gguf_path_, *hf_dir_}) {
      SCOPED_TRACE(path + " cache " + std::string(DTypeName(dtype)));
      LoadedModel m = Load(path);
      auto cache = m.model->NewKvCache(CacheOpts(dtype));
      ASSERT_TRUE(cache.ok());
      const std::vector<TokenId> head(kPrompt.begin(), kPrompt.begin() + 4);
      auto res = m.model->Forward(head, cache->get());
      ASSERT_TRUE(res.ok()) << res.status();
      ASSERT_EQ(res->logits.shape(), (Shape{1, kVocab}));
      ExpectRowNear(res->logits.data_as<float>(), want.logits[3], tol, "prefill");
      for (size_t t = 4; t < kPrompt.size(); ++t) {
        const TokenId one[] = {kPrompt[t]};
        res = m.model->Forward(one, cache->get());
        ASSERT_TRUE(res.ok()) << res.status();
        ExpectRowNear(res->logits.data_as<float>(), want.logits[t], tol,
                      "decode " + std::to_string(t));
      }
      EXPECT_EQ(std::vector<TokenId>((*cache)->tokens().begin(), (*cache)->tokens().end()),
                kPrompt);
    }
  }
}

TEST_F(TinyLlamaTest, RollbackThenReplayGivesTheSameLogits) {
  LoadedModel m = Load(*hf_dir_);
  auto cache = m.model->NewKvCache(CacheOpts(DType::kF32));
  ASSERT_TRUE(cache.ok());
  ASSERT_TRUE(m.model->Forward(kPrompt, cache->get()).ok());
  ASSERT_TRUE((*cache)->Rollback(3).ok());
  EXPECT_EQ((*cache)->n_past(), 4);
  // A different continuation after the rollback must see only the first 4 positions.
  const std::vector<TokenId> alt = {5, 6};
  auto res = m.model->Forward(alt, cache->get());
  ASSERT_TRUE(res.ok());
  std::vector<TokenId> seq(kPrompt.begin(), kPrompt.begin() + 4);
  seq.insert(seq.end(), alt.begin(), alt.end());
  const RefOut want = RefForward(*ref_, seq, 0);
  ExpectRowNear(res->logits.data_as<float>(), want.logits.back(), 1e-4, "after rollback");
}

TEST_F(TinyLlamaTest, MemoryKVJoinsTheAttentionOfItsLayer) {
  // Memory only at layer 1 (as a MemLong retrieval layer would have it), pre-RoPE keys.
  std::mt19937_64 rng(7);
  constexpr int kM = 5;
  RefMemory mem;
  mem.m = kM;
  mem.k = {Mat(), Random(rng, kM * kHeadsKv * kHd, 1.5)};
  mem.v = {Mat(), Random(rng, kM * kHeadsKv * kHd, 1.0)};
  const RefOut want = RefForward(*ref_, kPrompt, 1, &mem);
  const RefOut plain = RefForward(*ref_, kPrompt, 1);
  MemoryKV mkv;
  mkv.layers.resize(2);
  mkv.layers[1].k = ToTensor(mem.k[1], Shape{kM, kHeadsKv, kHd});
  mkv.layers[1].v = ToTensor(mem.v[1], Shape{kM, kHeadsKv, kHd});
  LoadedModel m = Load(*hf_dir_);
  ForwardOptions fo;
  fo.memory = &mkv;
  fo.all_logits = true;
  fo.start_pos = 1;  // memory sits at position 0, the window at 1..T
  auto res = m.model->Forward(kPrompt, nullptr, fo);
  ASSERT_TRUE(res.ok()) << res.status();
  double moved = 0.0;
  for (size_t t = 0; t < kPrompt.size(); ++t) {
    ExpectRowNear(res->logits.data_as<float>() + t * kVocab, want.logits[t], 1e-4,
                  "position " + std::to_string(t));
    for (int v = 0; v < kVocab; ++v) moved += std::abs(want.logits[t][v] - plain.logits[t][v]);
  }
  EXPECT_GT(moved, 1.0) << "the memory block should change the logits";
}

// Context memory (specs/memory_modes.md §2): memory keys pre-RoPE, scored with the queries
// rotated at one constant position P, local keys with the ordinary queries, one softmax.
TEST_F(TinyLlamaTest, ConstantDistanceMemoryMatchesReference) {
  std::mt19937_64 rng(11);
  constexpr int kM = 6;
  constexpr int64_t kP = 7;  // the local window length in the session
  RefMemory mem;
  mem.m = kM;
  mem.k = {Random(rng, kM * kHeadsKv * kHd, 1.5), Random(rng, kM * kHeadsKv * kHd, 1.5)};
  mem.v = {Random(rng, kM * kHeadsKv * kHd, 1.0), Random(rng, kM * kHeadsKv * kHd, 1.0)};
  mem.query_position = kP;
  const RefOut want = RefForward(*ref_, kPrompt, 0, &mem);
  RefMemory at_zero = mem;
  at_zero.query_position = -1;
  const RefOut zero = RefForward(*ref_, kPrompt, 0, &at_zero);
  // The GGUF file's Q/K head dims are permuted (pair i = dims 2i, 2i+1), so its memory keys are
  // the same keys in that order.
  auto memory_for = [&](bool gguf) {
    MemoryKV mkv;
    for (int l = 0; l < kLayers; ++l) {
      Mat k = mem.k[static_cast<size_t>(l)];
      if (gguf) {
        for (size_t row = 0; row < k.size(); row += kHd) {
          for (int i = 0; i < kHd / 2; ++i) {
            k[row + 2 * i] = mem.k[static_cast<size_t>(l)][row + i];
            k[row + 2 * i + 1] = mem.k[static_cast<size_t>(l)][row + i + kHd / 2];
          }
        }
      }
      LayerMemoryKV lm;
      lm.k = ToTensor(k, Shape{kM, kHeadsKv, kHd});
      lm.v = ToTensor(mem.v[static_cast<size_t>(l)], Shape{kM, kHeadsKv, kHd});
      lm.query_position = kP;
      mkv.layers.push_back(lm);
    }
    return mkv;
  };
  for (const std::string& path : {*gguf_path_, *hf_dir_}) {
    SCOPED_TRACE(path);
    const MemoryKV mkv = memory_for(path == *gguf_path_);
    LoadedModel m = Load(path);
    // Both with a KV cache (prefill then decode) and without one.
    auto cache = m.model->NewKvCache(CacheOpts(DType::kF32));
    ASSERT_TRUE(cache.ok());
    ForwardOptions fo;
    fo.memory = &mkv;
    fo.all_logits = true;
    const std::vector<TokenId> head(kPrompt.begin(), kPrompt.begin() + 5);
    auto res = m.model->Forward(head, cache->get(), fo);
    ASSERT_TRUE(res.ok()) << res.status();
    for (size_t t = 0; t < head.size(); ++t) {
      ExpectRowNear(res->logits.data_as<float>() + t * kVocab, want.logits[t], 1e-4,
                    "prefill position " + std::to_string(t));
    }
    for (size_t t = head.size(); t < kPrompt.size(); ++t) {
      const TokenId one[] = {kPrompt[t]};
      res = m.model->Forward(one, cache->get(), fo);
      ASSERT_TRUE(res.ok()) << res.status();
      ExpectRowNear(res->logits.data_as<float>(), want.logits[t], 1e-4,
                    "decode position " + std::to_string(t));
    }
  }
  double moved = 0.0;
  for (size_t t = 0; t < kPrompt.size(); ++t) {
    for (int v = 0; v < kVocab; ++v) moved += std::abs(want.logits[t][v] - zero.logits[t][v]);
  }
  EXPECT_GT(moved, 1.0) << "rotating the memory queries should change the logits";
  // A position that does not fit int32 is an error naming the layer.
  MemoryKV mkv = memory_for(false);
  mkv.layers[1].query_position = int64_t{1} << 40;
  LoadedModel m = Load(*hf_dir_);
  ForwardOptions fo;
  fo.memory = &mkv;
  auto bad = m.model->Forward(kPrompt, nullptr, fo);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("layer 1"), std::string::npos) << bad.status();
}

TEST_F(TinyLlamaTest, CapturesSeveralLayersInOnePass) {
  const RefOut want = RefForward(*ref_, kPrompt, 0);
  LoadedModel m = Load(*gguf_path_);
  ForwardOptions one;
  one.capture_layer = 1;
  auto layer1 = m.model->Forward(kPrompt, nullptr, one);
  ASSERT_TRUE(layer1.ok()) << layer1.status();
  ForwardOptions fo;
  fo.capture_layers = {1, 0};
  fo.last_layer = 1;
  fo.compute_logits = false;
  auto res = m.model->Forward(kPrompt, nullptr, fo);
  ASSERT_TRUE(res.ok()) << res.status();
  ASSERT_EQ(res->captured.size(), 2u);
  EXPECT_EQ(res->captured[0].layer, 1);
  EXPECT_EQ(res->captured[1].layer, 0);
  const int64_t T = static_cast<int64_t>(kPrompt.size());
  for (const auto& c : res->captured) {
    ASSERT_EQ(c.k.shape(), (Shape{T, kHeadsKv, kHd}));
    ASSERT_EQ(c.v.shape(), (Shape{T, kHeadsKv, kHd}));
  }
  // Layer 0 against the float64 reference (GGUF rows are permuted; compare through the HF file).
  LoadedModel hf = Load(*hf_dir_);
  auto hf_res = hf.model->Forward(kPrompt, nullptr, fo);
  ASSERT_TRUE(hf_res.ok()) << hf_res.status();
  for (int64_t t = 0; t < T; ++t) {
    ExpectRowNear(hf_res->captured[1].k.data_as<float>() + t * kHeadsKv * kHd,
                  want.k_pre_rope0[static_cast<size_t>(t)], 1e-4, "captured layer-0 k");
  }
  // Layer 1 equals the single-layer capture.
  for (int64_t i = 0; i < T * kHeadsKv * kHd; ++i) {
    ASSERT_EQ(res->captured[0].k.data_as<float>()[i], layer1->captured_k.data_as<float>()[i]);
    ASSERT_EQ(res->captured[0].v.data_as<float>()[i], layer1->captured_v.data_as<float>()[i]);
  }
  for (const std::vector<int32_t>& bad : {std::vector<int32_t>{0, 0}, std::vector<int32_t>{2},
                                          std::vector<int32_t>{-1}}) {
    ForwardOptions b = fo;
    b.capture_layers = bad;
    EXPECT_EQ(m.model->Forward(kPrompt, nullptr, b).status().code(),
              StatusCode::kInvalidArgument);
  }
  ForwardOptions above = fo;
  above.last_layer = 0;
  auto st = m.model->Forward(kPrompt, nullptr, above).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("last_layer"), std::string::npos) << st;
}

// The exact property of own-layer context memory (specs/memory_modes.md §2): when memory holds
// exactly the previous window's own-layer K/V at contiguous positions (its first tokens being the
// real sinks), the next window's logits equal full attention over both windows.
TEST_F(TinyLlamaTest, OracleMemoryOfThePreviousWindowEqualsFullAttention) {
  const std::vector<TokenId> first = {5, 9, 2, 77, 31, 31, 8, 64, 12};
  const std::vector<TokenId> second = {3, 17, 99, 0, 42, 42, 7};
  std::vector<TokenId> both = first;
  both.insert(both.end(), second.begin(), second.end());
  const int64_t n1 = static_cast<int64_t>(first.size());
  for (const std::string& path : {*gguf_path_, *hf_dir_}) {
    SCOPED_TRACE(path);
    LoadedModel m = Load(path);
    ForwardOptions full_opts;
    full_opts.all_logits = true;
    auto full = m.model->Forward(both, nullptr, full_opts);
    ASSERT_TRUE(full.ok()) << full.status();

    ForwardOptions ingest;
    ingest.capture_layers = {0, 1};
    ingest.last_layer = 1;
    ingest.compute_logits = false;
    auto kv = m.model->Forward(first, nullptr, ingest);
    ASSERT_TRUE(kv.ok()) << kv.status();
    MemoryKV mkv;
    for (const auto& c : kv->captured) {
      LayerMemoryKV lm;
      auto rotated = RotateMemoryKeys(backend_.get(), m.model->config().rope, c.k, -n1);
      ASSERT_TRUE(rotated.ok()) << rotated.status();
      lm.k = *rotated;
      lm.v = c.v;
      mkv.layers.push_back(lm);
    }
    // The second window in a fresh cache at positions 0.., prefill then decode.
    auto cache = m.model->NewKvCache(CacheOpts(DType::kF32));
    ASSERT_TRUE(cache.ok());
    ForwardOptions fo;
    fo.memory = &mkv;
    fo.all_logits = true;
    const std::vector<TokenId> head(second.begin(), second.begin() + 4);
    auto res = m.model->Forward(head, cache->get(), fo);
    ASSERT_TRUE(res.ok()) << res.status();
    std::vector<float> got(res->logits.data_as<float>(),
                           res->logits.data_as<float>() + res->logits.numel());
    for (size_t t = head.size(); t < second.size(); ++t) {
      const TokenId one[] = {second[t]};
      auto step = m.model->Forward(one, cache->get(), fo);
      ASSERT_TRUE(step.ok()) << step.status();
      got.insert(got.end(), step->logits.data_as<float>(),
                 step->logits.data_as<float>() + kVocab);
    }
    ASSERT_EQ(got.size(), second.size() * kVocab);
    for (size_t t = 0; t < second.size(); ++t) {
      const float* want = full->logits.data_as<float>() + (n1 + static_cast<int64_t>(t)) * kVocab;
      for (int v = 0; v < kVocab; ++v) {
        ASSERT_NEAR(got[t * kVocab + v], want[v], 1e-4 * (1.0 + std::abs(want[v])))
            << "second-window position " << t << " token " << v;
      }
    }
  }
}

TEST_F(TinyLlamaTest, CapturesPreRopeKeysAndObservesNamedIntermediates) {
  const RefOut want = RefForward(*ref_, kPrompt, 0);
  LoadedModel m = Load(*hf_dir_);
  std::vector<std::string> names;
  std::vector<float> last_hidden;
  ForwardOptions fo;
  fo.capture_layer = 0;
  fo.observer = [&](const Intermediate& im) {
    if (im.layer <= 0) names.push_back(std::string(im.name) + "@" + std::to_string(im.layer));
    if (im.layer == kLayers - 1 && im.name == "hidden") {
      last_hidden.assign(im.value.data_as<float>(), im.value.data_as<float>() + im.value.numel());
    }
  };
  auto res = m.model->Forward(kPrompt, nullptr, fo);
  ASSERT_TRUE(res.ok()) << res.status();
  ASSERT_EQ(res->captured_k.shape(), (Shape{static_cast<int64_t>(kPrompt.size()), kHeadsKv, kHd}));
  ASSERT_EQ(res->captured_v.shape(), res->captured_k.shape());
  for (size_t t = 0; t < kPrompt.size(); ++t) {
    ExpectRowNear(res->captured_k.data_as<float>() + t * kHeadsKv * kHd, want.k_pre_rope0[t], 1e-4,
                  "captured k");
  }
  const std::vector<std::string> expected = {
      "embeddings@-1", "attn_norm@0", "q_pre_rope@0", "k_pre_rope@0", "v@0", "q@0",
      "attn_out@0",    "ffn_norm@0",  "mlp_out@0",    "hidden@0", "output_norm@-1",
      "logits@-1"};
  EXPECT_EQ(names, expected);
  ASSERT_EQ(last_hidden.size(), kPrompt.size() * kEmbd);
  for (size_t t = 0; t < kPrompt.size(); ++t) {
    ExpectRowNear(last_hidden.data() + t * kEmbd, want.hidden[kLayers - 1][t], 1e-4, "hidden");
  }
}

TEST_F(TinyLlamaTest, StageSplitsGiveTheSameResult) {
  LoadedModel m = Load(*gguf_path_);
  auto before = m.model->Forward(kPrompt, nullptr);
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(m.model->SetLayout(ModelLayout::Split(kLayers, 1, 2, 1)).ok());
  EXPECT_EQ(m.model->layout().stages.size(), 2u);
  auto after = m.model->Forward(kPrompt, nullptr);
  ASSERT_TRUE(after.ok());
  for (int v = 0; v < kVocab; ++v) {
    EXPECT_EQ(before->logits.data_as<float>()[v], after->logits.data_as<float>()[v]);
  }
  // A repeated core (no adapter) is a looped llama; only the stage named "core" may repeat.
  ASSERT_TRUE(m.model->SetLayout(ModelLayout::Split(kLayers, 1, 2, 4)).ok());
  EXPECT_TRUE(m.model->is_recurrent());
  EXPECT_EQ(m.model->default_steps(), 4);
  ModelLayout coda_repeats = ModelLayout::Split(kLayers, 0, 1, 1);
  coda_repeats.stages.back().repeats = 2;
  EXPECT_EQ(m.model->SetLayout(coda_repeats).code(), StatusCode::kInvalidArgument);
  ModelLayout gap;
  gap.stages = {Stage{"prelude", 0, 1, 1}};
  EXPECT_EQ(m.model->SetLayout(gap).code(), StatusCode::kInvalidArgument);
}

TEST_F(TinyLlamaTest, BadInputsAreErrorsAndLeaveTheCacheAlone) {
  LoadedModel m = Load(*gguf_path_);
  auto cache = m.model->NewKvCache(CacheOpts(DType::kF16));
  ASSERT_TRUE(cache.ok());
  ASSERT_TRUE(m.model->Forward(kPrompt, cache->get()).ok());
  const std::vector<TokenId> bad = {1, kVocab};
  EXPECT_EQ(m.model->Forward(bad, cache->get()).status().code(), StatusCode::kInvalidArgument);
  const std::vector<TokenId> negative = {-1};
  EXPECT_EQ(m.model->Forward(negative, cache->get()).status().code(),
            StatusCode::kInvalidArgument);
  const std::vector<TokenId> too_long(32, 1);
  auto overflow = m.model->Forward(too_long, cache->get());
  EXPECT_EQ(overflow.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(overflow.status().message().find("context full"), std::string::npos);
  EXPECT_EQ((*cache)->n_past(), static_cast<int64_t>(kPrompt.size()));
  ForwardOptions fo;
  fo.capture_layer = kLayers;
  EXPECT_EQ(m.model->Forward(kPrompt, nullptr, fo).status().code(), StatusCode::kInvalidArgument);
  // Memory of the wrong shape is rejected by the attention op, named by layer.
  MemoryKV mkv;
  mkv.layers.resize(1);
  mkv.layers[0].k = ToTensor(Mat(3 * kHeadsKv * 8, 0.0), Shape{3, kHeadsKv, 8});
  mkv.layers[0].v = ToTensor(Mat(3 * kHeadsKv * 8, 0.0), Shape{3, kHeadsKv, 8});
  ForwardOptions fm;
  fm.memory = &mkv;
  auto r = m.model->Forward(kPrompt, nullptr, fm);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("layer 0"), std::string::npos) << r.status();
}

TEST_F(TinyLlamaTest, MisshapenCheckpointIsAClearError) {
  GgufWriter w;
  w.SetMetadata("general.architecture", MetadataValue::String("llama"));
  w.SetMetadata("llama.block_count", MetadataValue::U32(1));
  w.SetMetadata("llama.context_length", MetadataValue::U32(64));
  w.SetMetadata("llama.embedding_length", MetadataValue::U32(kEmbd));
  w.SetMetadata("llama.feed_forward_length", MetadataValue::U32(kFf));
  w.SetMetadata("llama.attention.head_count", MetadataValue::U32(kHeads));
  w.SetMetadata("llama.attention.layer_norm_rms_epsilon", MetadataValue::F32(1e-5f));
  ASSERT_TRUE(w.AddTensor("token_embd.weight", ToTensor(Mat(kVocab * kEmbd, 0.0),
                                                        Shape{kVocab, kEmbd})).ok());
  const std::string path = ::testing::TempDir() + "/muninn_tiny_bad.gguf";
  ASSERT_TRUE(w.WriteFile(path).ok());
  LoadModelOptions no_tokenizer;
  no_tokenizer.load_tokenizer = false;
  auto m = LoadModel(path, backend_.get(), no_tokenizer);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("output_norm"), std::string::npos) << m.status();
  std::filesystem::remove(path);
}

// ---- generation ----

// A byte-level vocabulary over the tiny model's 100 ids: ids 0..93 are '!'..'~', 94 is a space
// ("Ġ"), 95..98 two-letter pieces, 99 the end-of-text control token.
std::unique_ptr<Tokenizer> TinyTokenizer() {
  VocabSpec spec;
  spec.model = "gpt2";
  spec.pre = "none";
  for (int c = 33; c <= 126; ++c) spec.tokens.emplace_back(1, static_cast<char>(c));
  spec.tokens.push_back("\xc4\xa0");  // Ġ
  for (const char* s : {"ab", "cd", "ef", "gh"}) spec.tokens.emplace_back(s);
  spec.tokens.push_back("<|endoftext|>");
  spec.token_types.assign(spec.tokens.size(), static_cast<int32_t>(TokenType::kNormal));
  spec.token_types.back() = static_cast<int32_t>(TokenType::kControl);
  spec.eos_id = 99;
  auto tok = CreateTokenizer(spec);
  MUNINN_CHECK(tok.ok()) << tok.status();
  return std::move(tok).value();
}

TEST_F(TinyLlamaTest, GreedyGenerationFollowsTheReferenceArgmax) {
  LoadedModel m = Load(*gguf_path_);
  auto cache = m.model->NewKvCache(CacheOpts(DType::kF32));
  ASSERT_TRUE(cache.ok());
  GenerateOptions go;
  go.sampler = SamplerOptions::Greedy();
  go.max_tokens = 6;
  auto res = Generate(*m.model, **cache, nullptr, kPrompt, go);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->stop_reason, StopReason::kMaxTokens);
  std::vector<TokenId> seq = kPrompt;
  for (TokenId got : res->tokens) {
    const Mat logits = RefForward(*ref_, seq, 0).logits.back();
    const TokenId want =
        static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    ASSERT_EQ(got, want) << "after " << seq.size() << " tokens";
    seq.push_back(got);
  }
  EXPECT_EQ(res->tokens.size(), 6u);
  // The last sampled token is not fed back: the cache holds prompt + 5.
  EXPECT_EQ((*cache)->n_past(), static_cast<int64_t>(kPrompt.size() + 5));
}

TEST_F(TinyLlamaTest, GenerationStopsWhenTheContextIsFull) {
  LoadedModel m = Load(*gguf_path_);
  auto cache = m.model->NewKvCache(CacheOpts(DType::kF16));  // n_ctx 32
  ASSERT_TRUE(cache.ok());
  GenerateOptions go;
  go.sampler.seed = 3;
  go.stop_at_eog = false;
  go.max_tokens = 100;
  auto res = Generate(*m.model, **cache, nullptr, kPrompt, go);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->stop_reason, StopReason::kContextFull);
  EXPECT_EQ((*cache)->n_past(), 32);
  EXPECT_EQ(res->tokens.size(), 32u - kPrompt.size() + 1);
  const std::vector<TokenId> too_long(33, 1);
  (*cache)->Clear();
  auto over = Generate(*m.model, **cache, nullptr, too_long, go);
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ((*cache)->n_past(), 0);
}

TEST_F(TinyLlamaTest, SamplingIsDeterministicPerSeed) {
  LoadedModel m = Load(*gguf_path_);
  auto run = [&](uint64_t seed) {
    auto cache = m.model->NewKvCache(CacheOpts(DType::kF16));
    MUNINN_CHECK(cache.ok());
    GenerateOptions go;
    go.sampler.temperature = 1.5f;
    go.sampler.top_k = 0;
    go.sampler.min_p = 0.0f;
    go.sampler.seed = seed;
    go.stop_at_eog = false;
    go.max_tokens = 12;
    auto res = Generate(*m.model, **cache, nullptr, kPrompt, go);
    MUNINN_CHECK(res.ok()) << res.status();
    return res->tokens;
  };
  EXPECT_EQ(run(11), run(11));
  EXPECT_NE(run(11), run(12));
}

TEST_F(TinyLlamaTest, StopStringsCutTheStreamedText) {
  LoadedModel m = Load(*gguf_path_);
  std::unique_ptr<Tokenizer> tok = TinyTokenizer();
  GenerateOptions go;
  go.sampler = SamplerOptions::Greedy();
  go.sampler.repeat_penalty = 1.3f;  // keeps the greedy text varied
  go.stop_at_eog = false;
  go.max_tokens = 16;
  auto cache = m.model->NewKvCache(CacheOpts(DType::kF32));
  ASSERT_TRUE(cache.ok());
  auto full = Generate(*m.model, **cache, tok.get(), kPrompt, go);
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_GE(full->text.size(), 6u) << full->text;
  // Stop at a 2-byte string that starts at byte 3 (its first occurrence may be earlier).
  const std::string stop = full->text.substr(3, 2);
  const std::string expected = full->text.substr(0, full->text.find(stop));
  go.stop = {"never-appears", stop};
  std::string streamed;
  go.on_text = [&](std::string_view s) { streamed += s; };
  (*cache)->Clear();
  auto res = Generate(*m.model, **cache, tok.get(), kPrompt, go);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->stop_reason, StopReason::kStopString);
  EXPECT_EQ(res->text, expected);
  EXPECT_EQ(streamed, expected);
  // Without a stop string the stream is the whole text.
  streamed.clear();
  go.stop.clear();
  (*cache)->Clear();
  auto again = Generate(*m.model, **cache, tok.get(), kPrompt, go);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(streamed, full->text);
  EXPECT_EQ(again->tokens, full->tokens);
}

}  // namespace
}  // namespace muninn::model
