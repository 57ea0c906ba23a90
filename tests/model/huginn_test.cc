// Huginn recurrent-depth model: a tiny random checkpoint (Huginn's tensor names, config keys and
// layout 2/4/2, dimensions scaled down) written by HuginnWriter, loaded by the real loader and
// compared layer by layer with goldens from an independent float64 PyTorch forward
// (tools/reference/make_huginn_goldens.py -> tests/data/huginn_goldens.json) at r = 1, 4, 32 with
// zero initial state; KV cache layouts (full, compress-s4) against the same reference decoding
// token by token; tokenizer and chat template; clear errors for broken checkpoints; MemLong's
// memory attention and capture on Huginn layers.
//
// Tolerances: f32 weights and activations against float64 over up to 132 layers. The core is
// contractive (as a trained one converges), so errors do not grow with r: 2e-4·(1 + |ref|).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "muninn/core/cpu_backend.h"
#include "muninn/model/chat_template.h"
#include "muninn/model/huginn_writer.h"
#include "muninn/model/model_loader.h"
#include "muninn/model/safetensors_file.h"

namespace muninn::model {
namespace {

constexpr double kTol = 2e-4;

nlohmann::json LoadGoldens() {
  std::ifstream f(std::string(MUNINN_SOURCE_DIR) + "/tests/data/huginn_goldens.json");
  MUNINN_CHECK(f.good()) << "tests/data/huginn_goldens.json is missing";
  return nlohmann::json::parse(f);
}

// The committed text files (config.json, tokenizer.json, tokenizer_config.json) plus the
// generated F32 weights.
std::string WriteTinyFolder(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/muninn_huginn_" + name + "_" +
                          std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const std::filesystem::path src = std::string(MUNINN_SOURCE_DIR) + "/tests/data/huginn_tiny";
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"}) {
    std::filesystem::copy_file(src / f, std::filesystem::path(dir) / f,
                               std::filesystem::copy_options::overwrite_existing);
  }
  HuginnWriterOptions o;
  o.write_config = false;
  const Status st = WriteRandomHuginn(dir, o);
  MUNINN_CHECK(st.ok()) << st;
  return dir;
}

class HuginnTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    goldens_ = new nlohmann::json(LoadGoldens());
    dir_ = new std::string(WriteTinyFolder("golden"));
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    std::filesystem::remove_all(*dir_, ec);
    delete goldens_;
    delete dir_;
  }
  void SetUp() override {
    auto b = CreateCpuBackend(CpuBackendOptions{});
    ASSERT_TRUE(b.ok());
    backend_ = std::move(b).value();
  }
  LoadedModel Load(bool tokenizer = false, const std::string& dir = "") {
    LoadModelOptions lo;
    lo.load_tokenizer = tokenizer;
    lo.huginn_matrix_dtype = DType::kF32;
    auto m = LoadModel(dir.empty() ? *dir_ : dir, backend_.get(), lo);
    MUNINN_CHECK(m.ok()) << m.status();
    return std::move(m).value();
  }
  static std::vector<TokenId> Prompt() { return (*goldens_)["prompt"].get<std::vector<TokenId>>(); }

  static nlohmann::json* goldens_;
  static std::string* dir_;
  std::unique_ptr<Backend> backend_;
};
nlohmann::json* HuginnTest::goldens_ = nullptr;
std::string* HuginnTest::dir_ = nullptr;

void ExpectRowsNear(const Tensor& got, const nlohmann::json& want, const std::string& what) {
  ASSERT_EQ(got.dim(0), static_cast<int64_t>(want.size())) << what;
  for (size_t t = 0; t < want.size(); ++t) {
    const float* row = got.data_as<const float>() + t * static_cast<size_t>(got.dim(1));
    for (size_t i = 0; i < want[t].size(); ++i) {
      const double w = want[t][i].get<double>();
      ASSERT_NEAR(row[i], w, kTol * (1.0 + std::abs(w))) << what << " row " << t << " col " << i;
    }
  }
}

TEST_F(HuginnTest, GeneratedWeightsMatchTheReferenceGenerator) {
  auto st = SafetensorsFile::Open(*dir_ + "/model.safetensors");
  ASSERT_TRUE(st.ok()) << st.status();
  const auto& sums = (*goldens_)["checksums"];
  ASSERT_EQ((*st)->tensors().size(), sums.size());
  for (auto it = sums.begin(); it != sums.end(); ++it) {
    auto t = (*st)->GetTensor(it.key());
    ASSERT_TRUE(t.ok()) << it.key();
    double sum = 0.0;
    const float* p = t->data_as<const float>();
    for (int64_t i = 0; i < t->numel(); ++i) sum += p[i];
    EXPECT_NEAR(sum, (*it)[0].get<double>(), 1e-6 * (1.0 + std::abs(sum))) << it.key();
    EXPECT_EQ(p[0], static_cast<float>((*it)[1].get<double>())) << it.key();
  }
}

TEST_F(HuginnTest, HParamsAndLayoutComeFromConfig) {
  LoadedModel m = Load();
  EXPECT_EQ(m.hparams.arch, ModelArch::kHuginn);
  EXPECT_EQ(m.hparams.n_layer_prelude, 2);
  EXPECT_EQ(m.hparams.n_layer_core, 4);
  EXPECT_EQ(m.hparams.n_layer_coda, 2);
  EXPECT_EQ(m.hparams.n_recurrence, 32);
  EXPECT_FLOAT_EQ(m.hparams.embd_scale, 8.0f);
  EXPECT_EQ(m.hparams.rope.layout, RopeLayout::kInterleaved);
  EXPECT_FLOAT_EQ(m.hparams.rope.freq_base, 50000.0f);
  EXPECT_TRUE(m.model->is_recurrent());
  EXPECT_EQ(m.model->default_steps(), 32);
  ASSERT_NE(m.model->layout().core(), nullptr);
  EXPECT_EQ(m.model->layout().core()->first, 2);
  EXPECT_EQ(m.model->layout().core()->end, 6);
  EXPECT_EQ(m.model->weights().output.data(), m.model->weights().tok_embd.data());  // tied
}

// Layer by layer at r = 1, 4, 32: norms of every named intermediate, the last position's state
// after every iteration, and all logits.
TEST_F(HuginnTest, MatchesFloat64ReferenceLayerByLayer) {
  LoadedModel m = Load();
  const std::vector<TokenId> prompt = Prompt();
  for (const auto& run : (*goldens_)["runs"]) {
    const int steps = run["steps"].get<int>();
    SCOPED_TRACE("r = " + std::to_string(steps));
    std::map<std::string, std::vector<double>> norms;
    std::vector<std::vector<float>> states;
    ForwardOptions fo;
    fo.all_logits = true;
    fo.steps = steps;
    fo.observer = [&](const Intermediate& im) {
      std::string key;
      const int32_t l = im.layer;
      if (im.name == "hidden") {
        if (l < 2) {
          key = "prelude." + std::to_string(l);
        } else if (l < 6) {
          key = "core." + std::to_string(im.iteration) + "." + std::to_string(l - 2);
        } else {
          key = "coda." + std::to_string(l - 6);
        }
      } else if (l == -1 && (im.name == "adapter_out" || im.name == "state")) {
        key = std::string(im.name == "state" ? "state." : "adapter.") +
              std::to_string(im.iteration);
        if (im.name == "state") {
          const float* last = im.value.data_as<const float>() + (im.value.dim(0) - 1) * 64;
          states.emplace_back(last, last + 64);
        }
      } else if (l == -1) {
        key = std::string(im.name);
      } else {
        return;
      }
      std::vector<double> n;
      for (int64_t t = 0; t < im.value.dim(0); ++t) {
        double ss = 0.0;
        const float* row = im.value.data_as<const float>() + t * im.value.dim(1);
        for (int64_t i = 0; i < im.value.dim(1); ++i) ss += double{row[i]} * row[i];
        n.push_back(std::sqrt(ss));
      }
      norms[key] = n;
    };
    auto r = m.model->Forward(prompt, nullptr, fo);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->steps, steps);
    for (auto it = run["norms"].begin(); it != run["norms"].end(); ++it) {
      ASSERT_TRUE(norms.count(it.key())) << "muninn reported no intermediate " << it.key();
      const auto& got = norms[it.key()];
      ASSERT_EQ(got.size(), it->size()) << it.key();
      for (size_t t = 0; t < got.size(); ++t) {
        const double w = (*it)[t].get<double>();
        ASSERT_NEAR(got[t], w, kTol * (1.0 + w)) << it.key() << " position " << t;
      }
    }
    ASSERT_EQ(states.size(), run["state_last"].size());
    for (size_t i = 0; i < states.size(); ++i) {
      for (size_t j = 0; j < 64; ++j) {
        const double w = run["state_last"][i][j].get<double>();
        ASSERT_NEAR(states[i][j], w, kTol * (1.0 + std::abs(w))) << "iteration " << i;
      }
    }
    ExpectRowsNear(r->logits, run["logits"], "logits");
  }
}

// The default load converts the F32 matrices to bf16 (as huginn-0125 is evaluated). Against the
// float64 forward of the F32 weights: the same top-1 token at every position, and the top
// token's log-probability within 0.05 (measured: up to 0.023 here). The spec's 0.01 rule
// (§14.6) compares bf16 with a bf16 reference; here bf16 weight rounding is the whole error.
TEST_F(HuginnTest, Bf16MatricesKeepTopTokensAndLogProbs) {
  LoadModelOptions lo;
  lo.load_tokenizer = false;
  auto m = LoadModel(*dir_, backend_.get(), lo);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->model->weights().adapter.dtype(), DType::kBF16);
  EXPECT_EQ(m->model->weights().layers[2].wq.dtype(), DType::kBF16);
  for (const auto& run : (*goldens_)["runs"]) {
    ForwardOptions fo;
    fo.all_logits = true;
    fo.steps = run["steps"].get<int>();
    auto r = m->model->Forward(Prompt(), nullptr, fo);
    ASSERT_TRUE(r.ok()) << r.status();
    const int64_t V = r->logits.dim(1);
    for (size_t t = 0; t < run["logits"].size(); ++t) {
      const auto want = run["logits"][t].get<std::vector<double>>();
      const float* got = r->logits.data_as<const float>() + t * static_cast<size_t>(V);
      const size_t top = static_cast<size_t>(std::max_element(want.begin(), want.end()) -
                                             want.begin());
      EXPECT_EQ(static_cast<size_t>(std::max_element(got, got + V) - got), top)
          << "r " << fo.steps << " position " << t;
      double lse_w = 0.0, lse_g = 0.0;
      for (int64_t i = 0; i < V; ++i) {
        lse_w += std::exp(want[static_cast<size_t>(i)] - want[top]);
        lse_g += std::exp(double{got[i]} - got[top]);
      }
      EXPECT_NEAR(-std::log(lse_g), -std::log(lse_w), 0.05) << "position " << t;
    }
  }
}

// The prompt one token at a time through a full-layout cache (a slot per iteration and core
// layer) equals the batched forward at the same r; through compress-s4 (one slot per core layer,
// overwritten every iteration) it equals the reference's compress-s4 decoding.
TEST_F(HuginnTest, KvCacheLayoutsMatchReferenceDecoding) {
  LoadedModel m = Load();
  const std::vector<TokenId> prompt = Prompt();
  const nlohmann::json& full = (*goldens_)["runs"][1];  // r = 4
  ASSERT_EQ(full["steps"].get<int>(), 4);
  for (const char* share : {"full", "s4"}) {
    SCOPED_TRACE(share);
    KvCacheOptions ko;
    ko.n_ctx = 16;
    ko.dtype = DType::kF32;
    ko.max_steps = 4;
    ASSERT_TRUE(KvSlotLayout::ParseShare(share, &ko.share, &ko.share_k).ok());
    auto cache = m.model->NewKvCache(ko);
    ASSERT_TRUE(cache.ok()) << cache.status();
    EXPECT_EQ((*cache)->n_slots(), std::string(share) == "full" ? 2 + 16 + 2 : 2 + 4 + 2);
    const nlohmann::json& want =
        std::string(share) == "full" ? full["logits"] : (*goldens_)["decode_s4_r4"]["logits"];
    for (size_t p = 0; p < prompt.size(); ++p) {
      ForwardOptions fo;
      fo.steps = 4;
      auto r = m.model->Forward(std::span(&prompt[p], 1), cache->get(), fo);
      ASSERT_TRUE(r.ok()) << r.status();
      ExpectRowsNear(r->logits, nlohmann::json::array({want[p]}), "position " + std::to_string(p));
    }
  }
}

TEST_F(HuginnTest, FullCacheRefusesMoreStepsThanItHasSlotsFor) {
  LoadedModel m = Load();
  KvCacheOptions ko;
  ko.n_ctx = 8;
  ko.max_steps = 4;
  auto cache = m.model->NewKvCache(ko);
  ASSERT_TRUE(cache.ok());
  const TokenId one[] = {5};
  ForwardOptions fo;
  fo.steps = 5;
  auto r = m.model->Forward(one, cache->get(), fo);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("max_steps"), std::string::npos) << r.status();
  EXPECT_EQ((*cache)->n_past(), 0);
}

TEST_F(HuginnTest, TokenizerAndChatTemplate) {
  LoadedModel m = Load(/*tokenizer=*/true);
  ASSERT_NE(m.tokenizer, nullptr);
  for (const auto& c : (*goldens_)["tokenizer"]) {
    const std::vector<TokenId> ids = m.tokenizer->Encode(c["text"].get<std::string>(),
                                                         /*add_special=*/false,
                                                         /*parse_special=*/true);
    EXPECT_EQ(ids, c["ids"].get<std::vector<TokenId>>()) << c["text"];
  }
  auto t = ChatTemplate::FromJinja(m.chat_template);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->kind(), ChatTemplateKind::kHuginn);
}

// MemLong on a Huginn model: the coda's layers attend to retrieved memory, and the prelude's
// layer can be captured as the memory layer.
TEST_F(HuginnTest, CodaTakesMemoryAndPreludeLayerIsCaptured) {
  LoadedModel m = Load();
  const std::vector<TokenId> prompt = Prompt();
  ForwardOptions fo;
  fo.steps = 4;
  fo.capture_layer = 1;
  Tensor observed_k;
  fo.observer = [&](const Intermediate& im) {
    if (im.layer == 1 && im.name == "k_pre_rope") observed_k = *im.value.Contiguous();
  };
  auto plain = m.model->Forward(prompt, nullptr, fo);
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(plain->captured_k.defined());
  ASSERT_EQ(plain->captured_k.shape(), (Shape{7, 4, 16}));
  for (int64_t i = 0; i < observed_k.numel(); ++i) {
    ASSERT_EQ(plain->captured_k.data_as<const float>()[i], observed_k.data_as<const float>()[i]);
  }
  // Memory for coda layer 6: its own captured keys/values as 7 memory tokens.
  MemoryKV mem;
  mem.layers.resize(7);
  mem.layers[6] = LayerMemoryKV{plain->captured_k, plain->captured_v};
  ForwardOptions with_mem;
  with_mem.steps = 4;
  with_mem.memory = &mem;
  auto a = m.model->Forward(prompt, nullptr, with_mem);
  ASSERT_TRUE(a.ok()) << a.status();
  double diff = 0.0;
  for (int64_t i = 0; i < a->logits.numel(); ++i) {
    diff += std::abs(a->logits.data_as<const float>()[i] - plain->logits.data_as<const float>()[i]);
  }
  EXPECT_GT(diff, 1e-3);  // the memory is attended to
  // The same with a cache, token by token vs batched.
  KvCacheOptions ko;
  ko.n_ctx = 16;
  ko.dtype = DType::kF32;
  ko.max_steps = 4;
  auto cache = m.model->NewKvCache(ko);
  ASSERT_TRUE(cache.ok());
  auto b = m.model->Forward(prompt, cache->get(), with_mem);
  ASSERT_TRUE(b.ok()) << b.status();
  for (int64_t i = 0; i < a->logits.numel(); ++i) {
    ASSERT_NEAR(a->logits.data_as<const float>()[i], b->logits.data_as<const float>()[i], 1e-4);
  }
}

// Official Huginn checkpoints (save_pretrained of the Hub's raven modeling code) carry the RoPE
// table as a persistent buffer: "freqs_cis" = stack([cos(t·f), sin(t·f)], dim=4) with
// t = 0..block_size-1 and f_i = rope_base^(-2i/head_dim), shape [1, block_size, 1, head_dim/2, 2],
// f32. The Hub is unreachable from here, so this writes that buffer into the tiny folder's
// model.safetensors exactly in that layout; the model must load and compute the same logits.
TEST_F(HuginnTest, OfficialFreqsCisBufferIsAccepted) {
  const std::string dir = WriteTinyFolder("freqs_cis");
  const std::string path = dir + "/model.safetensors";
  std::vector<char> file;
  {
    std::ifstream in(path, std::ios::binary);
    file.assign(std::istreambuf_iterator<char>(in), {});
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, file.data(), 8);
  nlohmann::json header = nlohmann::json::parse(file.begin() + 8, file.begin() + 8 + header_len);
  std::vector<char> data(file.begin() + 8 + static_cast<std::ptrdiff_t>(header_len), file.end());
  const int64_t block_size = 256, head_dim = 16;
  const double theta = 50000.0;
  std::vector<float> table;
  for (int64_t t = 0; t < block_size; ++t) {
    for (int64_t i = 0; i < head_dim / 2; ++i) {
      const float inv = static_cast<float>(1.0 / std::pow(theta, static_cast<double>(2 * i) / head_dim));
      const float f = static_cast<float>(t) * inv;
      table.push_back(std::cos(f));
      table.push_back(std::sin(f));
    }
  }
  const uint64_t begin = data.size();
  header["freqs_cis"] = {{"dtype", "F32"},
                         {"shape", {1, block_size, 1, head_dim / 2, 2}},
                         {"data_offsets", {begin, begin + table.size() * 4}}};
  const char* raw = reinterpret_cast<const char*>(table.data());
  data.insert(data.end(), raw, raw + table.size() * 4);
  std::string h = header.dump();
  while (h.size() % 8 != 0) h.push_back(' ');
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    const uint64_t n = h.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(h.data(), static_cast<std::streamsize>(h.size()));
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
  }
  auto st = SafetensorsFile::Open(path);
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_EQ((*st)->skipped_tensors().size(), 1u);

  LoadedModel with_buffer = Load(false, dir);
  LoadedModel plain = Load();
  ForwardOptions fo;
  fo.steps = 4;
  auto a = with_buffer.model->Forward(Prompt(), nullptr, fo);
  auto b = plain.model->Forward(Prompt(), nullptr, fo);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(a->logits.numel(), b->logits.numel());
  for (int64_t i = 0; i < a->logits.numel(); ++i) {
    ASSERT_EQ(a->logits.data_as<const float>()[i], b->logits.data_as<const float>()[i]);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST_F(HuginnTest, BrokenCheckpointsGiveClearErrors) {
  const std::string base = WriteTinyFolder("broken");
  auto edit_config = [&](const std::function<void(nlohmann::json&)>& f) {
    std::ifstream in(*dir_ + "/config.json");
    nlohmann::json c = nlohmann::json::parse(in);
    f(c);
    std::ofstream(base + "/config.json") << c.dump();
  };
  auto expect = [&](StatusCode code, const std::string& needle) {
    LoadModelOptions lo;
    lo.load_tokenizer = false;
    auto m = LoadModel(base, backend_.get(), lo);
    ASSERT_FALSE(m.ok()) << needle;
    EXPECT_EQ(m.status().code(), code) << m.status();
    EXPECT_NE(m.status().message().find(needle), std::string::npos) << m.status();
  };
  edit_config([](nlohmann::json& c) { c.erase("n_layers_in_recurrent_block"); });
  expect(StatusCode::kNotFound, "n_layers_in_recurrent_block");
  edit_config([](nlohmann::json& c) { c["injection_type"] = "add"; });
  expect(StatusCode::kUnimplemented, "injection_type");
  edit_config([](nlohmann::json& c) { c["n_layers_in_coda"] = 3; });
  expect(StatusCode::kInvalidArgument, "n_layers_in_coda");
  edit_config([](nlohmann::json& c) { c["intermediate_size"] = 96; });
  expect(StatusCode::kInvalidArgument, "transformer.prelude.0.mlp.fc.weight");
  edit_config([](nlohmann::json&) {});
  HuginnWriterOptions o;
  o.write_config = false;
  o.qk_bias = false;  // the config still says qk_bias: true
  ASSERT_TRUE(WriteRandomHuginn(base, o).ok());
  expect(StatusCode::kNotFound, "transformer.prelude.0.attn.qk_bias");
  std::error_code ec;
  std::filesystem::remove_all(base, ec);
}

}  // namespace
}  // namespace muninn::model
