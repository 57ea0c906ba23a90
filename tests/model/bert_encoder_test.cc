// BertEncoder: a tiny random BERT folder written by the test, compared with a float64 reference
// implemented here; batching, truncation and error paths; and all-MiniLM-L6-v2 against goldens
// from Hugging Face transformers (tools/reference/make_bert_goldens.py), skipped when the model
// folder is absent.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "muninn/core/cpu_backend.h"
#include "muninn/core/fp16.h"
#include "muninn/core/thread_pool.h"
#include "muninn/model/bert_encoder.h"
#include "muninn/model/safetensors_writer.h"

namespace muninn::model {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// A tiny random BERT, written as a Hugging Face folder.

constexpr int kVocab = 40;
constexpr int kEmbd = 16;
constexpr int kHead = 4;
constexpr int kLayer = 2;
constexpr int kFf = 32;
constexpr int kPos = 16;
constexpr int kType = 2;
constexpr int kMaxSeq = 10;  // sentence_bert_config.json max_seq_length
constexpr double kEps = 1e-12;

const char* const kWords[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick",
                              "brown", "fox", "jump", "##s", "over", "lazy", "dog", ".", ","};

struct TinyTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};
using TinyWeights = std::map<std::string, TinyTensor>;

TinyWeights MakeTinyWeights(uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  TinyWeights w;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float center) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    TinyTensor t{std::move(shape), std::vector<float>(static_cast<size_t>(n))};
    for (float& v : t.values) v = center + u(rng);
    w[name] = std::move(t);
  };
  add("embeddings.word_embeddings.weight", {kVocab, kEmbd}, 0.0f);
  add("embeddings.position_embeddings.weight", {kPos, kEmbd}, 0.0f);
  add("embeddings.token_type_embeddings.weight", {kType, kEmbd}, 0.0f);
  add("embeddings.LayerNorm.weight", {kEmbd}, 1.0f);
  add("embeddings.LayerNorm.bias", {kEmbd}, 0.0f);
  for (int i = 0; i < kLayer; ++i) {
    const std::string p = "encoder.layer." + std::to_string(i) + ".";
    for (const char* m : {"attention.self.query", "attention.self.key", "attention.self.value",
                          "attention.output.dense"}) {
      add(p + m + ".weight", {kEmbd, kEmbd}, 0.0f);
      add(p + m + ".bias", {kEmbd}, 0.0f);
    }
    add(p + "attention.output.LayerNorm.weight", {kEmbd}, 1.0f);
    add(p + "attention.output.LayerNorm.bias", {kEmbd}, 0.0f);
    add(p + "intermediate.dense.weight", {kFf, kEmbd}, 0.0f);
    add(p + "intermediate.dense.bias", {kFf}, 0.0f);
    add(p + "output.dense.weight", {kEmbd, kFf}, 0.0f);
    add(p + "output.dense.bias", {kEmbd}, 0.0f);
    add(p + "output.LayerNorm.weight", {kEmbd}, 1.0f);
    add(p + "output.LayerNorm.bias", {kEmbd}, 0.0f);
  }
  add("pooler.dense.weight", {kEmbd, kEmbd}, 0.0f);  // present in real files, unused
  return w;
}

void WriteText(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  ASSERT_TRUE(f.good()) << path;
}

struct FolderOptions {
  std::string model_type = "bert";
  std::string drop_tensor;       // leave this tensor out
  std::string reshape_tensor;    // store this tensor with one row too many
  std::string prefix;            // tensor name prefix ("bert.")
  bool f16_matrices = false;     // store 2-d weights as f16
  std::string modules_json = R"([
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize",
     "type": "sentence_transformers.models.Normalize"}])";
  std::string pooling_json = R"({"word_embedding_dimension": 16,
    "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true,
    "pooling_mode_max_tokens": false, "pooling_mode_mean_sqrt_len_tokens": false})";
};

// Writes config.json, model.safetensors, vocab.txt and the sentence-transformers files.
void WriteTinyFolder(const fs::path& dir, const TinyWeights& weights, const FolderOptions& o) {
  fs::remove_all(dir);
  fs::create_directories(dir / "1_Pooling");
  nlohmann::json config = {
      {"architectures", {"BertModel"}}, {"model_type", o.model_type},
      {"vocab_size", kVocab},           {"hidden_size", kEmbd},
      {"num_hidden_layers", kLayer},    {"num_attention_heads", kHead},
      {"intermediate_size", kFf},       {"max_position_embeddings", kPos},
      {"type_vocab_size", kType},       {"layer_norm_eps", kEps},
      {"hidden_act", "gelu"},           {"position_embedding_type", "absolute"}};
  WriteText(dir / "config.json", config.dump(2));
  WriteText(dir / "sentence_bert_config.json",
            R"({"max_seq_length": )" + std::to_string(kMaxSeq) + R"(, "do_lower_case": false})");
  WriteText(dir / "modules.json", o.modules_json);
  WriteText(dir / "1_Pooling" / "config.json", o.pooling_json);
  std::string vocab;
  for (const char* word : kWords) vocab += std::string(word) + "\n";
  for (int i = static_cast<int>(std::size(kWords)); i < kVocab; ++i) {
    vocab += "w" + std::to_string(i) + "\n";
  }
  WriteText(dir / "vocab.txt", vocab);

  SafetensorsWriter writer;
  writer.SetMetadata("format", "pt");
  for (const auto& [name, t] : weights) {
    if (name == o.drop_tensor) continue;
    std::vector<int64_t> shape = t.shape;
    std::vector<float> values = t.values;
    if (name == o.reshape_tensor) {  // one more row (or twice the length for a vector)
      shape[0] = shape.size() == 1 ? shape[0] * 2 : shape[0] + 1;
      int64_t numel = 1;
      for (int64_t d : shape) numel *= d;
      values.resize(static_cast<size_t>(numel), 0.0f);
    }
    auto tensor = Tensor::FromVector(Shape(std::span<const int64_t>(shape)), values);
    ASSERT_TRUE(tensor.ok()) << tensor.status();
    Tensor stored = *tensor;
    if (o.f16_matrices && shape.size() == 2) {
      auto h = Tensor::Empty(DType::kF16, stored.shape());
      ASSERT_TRUE(h.ok());
      for (size_t i = 0; i < values.size(); ++i) h->data_as<uint16_t>()[i] = Fp32ToFp16(values[i]);
      stored = *h;
    }
    ASSERT_TRUE(writer.AddTensor(o.prefix + name, stored).ok()) << name;
  }
  // BertModel files carry this int64 buffer; the loader must ignore it.
  ASSERT_TRUE(writer.AddRawTensor(o.prefix + "embeddings.position_ids", "I64", {1, kPos},
                                  std::vector<uint8_t>(8 * kPos, 0)).ok());
  ASSERT_TRUE(writer.WriteFile((dir / "model.safetensors").string()).ok());
}

// Rounds every value of the 2-d tensors through f16, as the f16 folder stores them.
TinyWeights RoundMatricesToF16(TinyWeights w) {
  for (auto& [name, t] : w) {
    if (t.shape.size() != 2) continue;
    for (float& v : t.values) v = Fp16ToFp32(Fp32ToFp16(v));
  }
  return w;
}

// ---------------------------------------------------------------------------------------------
// The float64 reference: BertModel + mean pooling + L2 normalisation, written from the maths.

using Mat = std::vector<std::vector<double>>;  // [rows][cols]

Mat Linear(const Mat& x, const TinyTensor& w, const TinyTensor& b) {
  const size_t n_out = static_cast<size_t>(w.shape[0]);
  const size_t n_in = static_cast<size_t>(w.shape[1]);
  Mat y(x.size(), std::vector<double>(n_out));
  for (size_t r = 0; r < x.size(); ++r) {
    for (size_t o = 0; o < n_out; ++o) {
      double s = b.values[o];
      for (size_t i = 0; i < n_in; ++i) s += x[r][i] * w.values[o * n_in + i];
      y[r][o] = s;
    }
  }
  return y;
}

void LayerNormInPlace(Mat* x, const TinyTensor& g, const TinyTensor& b) {
  for (auto& row : *x) {
    double mean = 0, var = 0;
    for (double v : row) mean += v;
    mean /= static_cast<double>(row.size());
    for (double v : row) var += (v - mean) * (v - mean);
    var /= static_cast<double>(row.size());
    const double inv = 1.0 / std::sqrt(var + kEps);
    for (size_t j = 0; j < row.size(); ++j) row[j] = (row[j] - mean) * inv * g.values[j] + b.values[j];
  }
}

std::vector<double> ReferenceEmbedding(const TinyWeights& w, const std::vector<TokenId>& ids) {
  const size_t T = ids.size();
  const size_t D = kEmbd;
  const size_t hd = kEmbd / kHead;
  auto W = [&](const std::string& name) -> const TinyTensor& { return w.at(name); };
  Mat h(T, std::vector<double>(D));
  for (size_t t = 0; t < T; ++t) {
    for (size_t j = 0; j < D; ++j) {
      h[t][j] = double{W("embeddings.word_embeddings.weight").values[static_cast<size_t>(ids[t]) * D + j]} +
                W("embeddings.position_embeddings.weight").values[t * D + j] +
                W("embeddings.token_type_embeddings.weight").values[j];
    }
  }
  LayerNormInPlace(&h, W("embeddings.LayerNorm.weight"), W("embeddings.LayerNorm.bias"));
  for (int l = 0; l < kLayer; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    auto lin = [&](const Mat& x, const std::string& m) {
      return Linear(x, W(p + m + ".weight"), W(p + m + ".bias"));
    };
    const Mat q = lin(h, "attention.self.query");
    const Mat k = lin(h, "attention.self.key");
    const Mat v = lin(h, "attention.self.value");
    Mat a(T, std::vector<double>(D, 0.0));
    for (size_t head = 0; head < static_cast<size_t>(kHead); ++head) {
      for (size_t i = 0; i < T; ++i) {
        std::vector<double> s(T);
        double mx = -1e300;
        for (size_t j = 0; j < T; ++j) {
          double dot = 0;
          for (size_t e = 0; e < hd; ++e) dot += q[i][head * hd + e] * k[j][head * hd + e];
          s[j] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (double& x : s) z += (x = std::exp(x - mx));
        for (size_t j = 0; j < T; ++j) {
          for (size_t e = 0; e < hd; ++e) a[i][head * hd + e] += s[j] / z * v[j][head * hd + e];
        }
      }
    }
    Mat o = lin(a, "attention.output.dense");
    for (size_t t = 0; t < T; ++t) for (size_t j = 0; j < D; ++j) o[t][j] += h[t][j];
    LayerNormInPlace(&o, W(p + "attention.output.LayerNorm.weight"),
                     W(p + "attention.output.LayerNorm.bias"));
    h = o;
    Mat f = lin(h, "intermediate.dense");
    for (auto& row : f) for (double& x : row) x = 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    Mat f2 = lin(f, "output.dense");
    for (size_t t = 0; t < T; ++t) for (size_t j = 0; j < D; ++j) f2[t][j] += h[t][j];
    LayerNormInPlace(&f2, W(p + "output.LayerNorm.weight"), W(p + "output.LayerNorm.bias"));
    h = f2;
  }
  std::vector<double> e(D, 0.0);
  for (size_t t = 0; t < T; ++t) for (size_t j = 0; j < D; ++j) e[j] += h[t][j] / static_cast<double>(T);
  double norm = 0;
  for (double x : e) norm += x * x;
  norm = std::sqrt(norm);
  for (double& x : e) x /= norm;
  return e;
}

// ---------------------------------------------------------------------------------------------

class BertEncoderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pool_ = std::make_unique<ThreadPool>(2);
    CpuBackendOptions bo;
    bo.pool = pool_.get();
    auto b = CreateCpuBackend(bo);
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = std::move(b).value();
    dir_ = fs::path(::testing::TempDir()) /
           ("muninn_bert_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  StatusOr<std::unique_ptr<BertEncoder>> LoadTiny(const TinyWeights& w, const FolderOptions& o,
                                                  int64_t max_batch_tokens = 4096) {
    WriteTinyFolder(dir_, w, o);
    BertEncoderOptions eo;
    eo.backend = backend_.get();
    eo.max_batch_tokens = max_batch_tokens;
    return BertEncoder::Load(dir_.string(), eo);
  }

  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Backend> backend_;
  fs::path dir_;
};

// Varied lengths (1 .. kMaxSeq) so that packing several texts in one batch is exercised.
std::vector<std::vector<TokenId>> TinySequences(uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<TokenId>> out;
  for (int len : {1, 2, 5, kMaxSeq, 3, 7}) {
    std::vector<TokenId> s;
    for (int i = 0; i < len; ++i) {
      s.push_back(static_cast<TokenId>(std::uniform_int_distribution<int>(0, kVocab - 1)(rng)));
    }
    out.push_back(std::move(s));
  }
  return out;
}

void ExpectMatchesReference(const TinyWeights& w, const std::vector<std::vector<TokenId>>& seqs,
                            const std::vector<float>& got, double tol) {
  ASSERT_EQ(got.size(), seqs.size() * kEmbd);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const std::vector<double> want = ReferenceEmbedding(w, seqs[i]);
    double max_err = 0;
    for (size_t j = 0; j < static_cast<size_t>(kEmbd); ++j) {
      max_err = std::max(max_err, std::abs(want[j] - got[i * kEmbd + j]));
    }
    EXPECT_LT(max_err, tol) << "sequence " << i << " of length " << seqs[i].size();
  }
}

TEST_F(BertEncoderTest, TinyMatchesFloat64Reference) {
  const TinyWeights w = MakeTinyWeights(11);
  auto enc = LoadTiny(w, {});
  ASSERT_TRUE(enc.ok()) << enc.status();
  EXPECT_EQ((*enc)->dim(), kEmbd);
  EXPECT_EQ((*enc)->config().max_tokens, kMaxSeq);
  EXPECT_EQ((*enc)->config().pooling, BertPooling::kMean);
  EXPECT_TRUE((*enc)->config().normalize);
  const auto seqs = TinySequences(5);
  auto got = (*enc)->EmbedIds(seqs);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectMatchesReference(w, seqs, *got, 2e-5);
}

TEST_F(BertEncoderTest, TinyF16WeightsMatchReferenceOfRoundedWeights) {
  const TinyWeights w = MakeTinyWeights(12);
  FolderOptions o;
  o.f16_matrices = true;
  auto enc = LoadTiny(w, o);
  ASSERT_TRUE(enc.ok()) << enc.status();
  const auto seqs = TinySequences(6);
  auto got = (*enc)->EmbedIds(seqs);
  ASSERT_TRUE(got.ok()) << got.status();
  // The backend may round activations for f16 dot products: a looser bound than f32.
  ExpectMatchesReference(RoundMatricesToF16(w), seqs, *got, 5e-3);
}

TEST_F(BertEncoderTest, TinyBatchesGiveTheSameEmbeddingsAsSingles) {
  const TinyWeights w = MakeTinyWeights(13);
  // max_batch_tokens 12 splits the six sequences into several batches.
  auto batched = LoadTiny(w, {}, 12);
  ASSERT_TRUE(batched.ok()) << batched.status();
  const auto seqs = TinySequences(7);
  auto all = (*batched)->EmbedIds(seqs);
  ASSERT_TRUE(all.ok()) << all.status();
  for (size_t i = 0; i < seqs.size(); ++i) {
    auto one = (*batched)->EmbedIds(std::span(&seqs[i], 1));
    ASSERT_TRUE(one.ok()) << one.status();
    for (size_t j = 0; j < static_cast<size_t>(kEmbd); ++j) {
      EXPECT_NEAR((*all)[i * kEmbd + j], (*one)[j], 1e-6) << "sequence " << i << " dim " << j;
    }
  }
  // Forward over the whole batch: rows of each text, [total, n_embd], with named intermediates.
  int observed = 0;
  auto hidden = (*batched)->Forward(seqs, [&](std::string_view name, int32_t layer,
                                              const Tensor& value) {
    EXPECT_EQ(name, layer < 0 ? "embd" : "hidden");
    EXPECT_EQ(value.dim(1), kEmbd);
    ++observed;
  });
  ASSERT_TRUE(hidden.ok()) << hidden.status();
  EXPECT_EQ(observed, 1 + kLayer);
  EXPECT_EQ(hidden->dim(0), 1 + 2 + 5 + kMaxSeq + 3 + 7);
}

TEST_F(BertEncoderTest, TinyTextsAreTokenizedAndTruncatedKeepingSep) {
  const TinyWeights w = MakeTinyWeights(14);
  auto enc = LoadTiny(w, {});
  ASSERT_TRUE(enc.ok()) << enc.status();
  auto ids = (*enc)->Tokenize("The quick brown fox jumps.");
  ASSERT_TRUE(ids.ok()) << ids.status();
  // [CLS] the quick brown fox jump ##s . [SEP]
  EXPECT_EQ(*ids, (std::vector<TokenId>{2, 5, 6, 7, 8, 9, 10, 14, 3}));
  auto empty = (*enc)->Tokenize("");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, (std::vector<TokenId>{2, 3}));
  auto long_ids = (*enc)->Tokenize("the lazy dog jumps over the quick brown fox , the dog .");
  ASSERT_TRUE(long_ids.ok());
  EXPECT_EQ(*long_ids, (std::vector<TokenId>{2, 5, 12, 13, 9, 10, 11, 5, 6, 3}));

  const std::vector<std::string> texts = {"the quick brown fox", "",
                                          "the lazy dog jumps over the quick brown fox , the dog ."};
  auto emb = (*enc)->Embed(texts);
  ASSERT_TRUE(emb.ok()) << emb.status();
  std::vector<std::vector<TokenId>> seqs;
  for (const auto& t : texts) seqs.push_back(*(*enc)->Tokenize(t));
  ExpectMatchesReference(w, seqs, *emb, 2e-5);
  auto none = (*enc)->Embed({});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST_F(BertEncoderTest, TinyLoadsBertPrefixedNamesAndClsPooling) {
  const TinyWeights w = MakeTinyWeights(15);
  FolderOptions o;
  o.prefix = "bert.";
  o.pooling_json = R"({"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false})";
  o.modules_json = R"([{"path": "", "type": "sentence_transformers.models.Transformer"},
                       {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])";
  auto enc = LoadTiny(w, o);
  ASSERT_TRUE(enc.ok()) << enc.status();
  EXPECT_EQ((*enc)->config().pooling, BertPooling::kCls);
  EXPECT_FALSE((*enc)->config().normalize);
  const std::vector<std::vector<TokenId>> seqs = {{2, 7, 8, 3}, {2, 3}};
  auto got = (*enc)->EmbedIds(seqs);
  ASSERT_TRUE(got.ok()) << got.status();
  auto hidden = (*enc)->Forward(seqs);
  ASSERT_TRUE(hidden.ok());
  const float* rows = hidden->data_as<const float>();
  for (int j = 0; j < kEmbd; ++j) {
    EXPECT_FLOAT_EQ((*got)[static_cast<size_t>(j)], rows[j]);                    // row 0
    EXPECT_FLOAT_EQ((*got)[static_cast<size_t>(kEmbd + j)], rows[4 * kEmbd + j]);  // row 4
  }
}

void ExpectLoadError(StatusOr<std::unique_ptr<BertEncoder>> enc, StatusCode code,
                     std::string_view needle) {
  ASSERT_FALSE(enc.ok()) << "expected an error naming '" << needle << "'";
  EXPECT_EQ(enc.status().code(), code) << enc.status();
  EXPECT_NE(enc.status().message().find(needle), std::string::npos) << enc.status();
}

TEST_F(BertEncoderTest, TinyBadFoldersGiveErrorsNamingTheProblem) {
  const TinyWeights w = MakeTinyWeights(16);
  {
    FolderOptions o;
    o.drop_tensor = "encoder.layer.1.attention.self.key.bias";
    ExpectLoadError(LoadTiny(w, o), StatusCode::kNotFound,
                    "encoder.layer.1.attention.self.key.bias");
  }
  {
    FolderOptions o;
    o.reshape_tensor = "encoder.layer.0.intermediate.dense.weight";
    ExpectLoadError(LoadTiny(w, o), StatusCode::kInvalidArgument,
                    "encoder.layer.0.intermediate.dense.weight");
  }
  {
    FolderOptions o;
    o.reshape_tensor = "embeddings.LayerNorm.bias";
    ExpectLoadError(LoadTiny(w, o), StatusCode::kInvalidArgument, "embeddings.LayerNorm.bias");
  }
  {
    FolderOptions o;
    o.model_type = "roberta";
    ExpectLoadError(LoadTiny(w, o), StatusCode::kUnimplemented, "roberta");
  }
  {
    FolderOptions o;
    o.modules_json = R"([{"path": "", "type": "sentence_transformers.models.Transformer"},
                         {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                         {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}])";
    ExpectLoadError(LoadTiny(w, o), StatusCode::kUnimplemented, "Dense");
  }
  {
    FolderOptions o;
    o.modules_json = R"([{"path": "../../etc", "type": "sentence_transformers.models.Pooling"}])";
    ExpectLoadError(LoadTiny(w, o), StatusCode::kInvalidArgument, "../../etc");
  }
  {
    FolderOptions o;
    o.pooling_json = R"({"pooling_mode_max_tokens": true})";
    ExpectLoadError(LoadTiny(w, o), StatusCode::kUnimplemented, "pooling_mode_max_tokens");
  }
  {
    FolderOptions o;
    o.modules_json = "[{";
    ExpectLoadError(LoadTiny(w, o), StatusCode::kInvalidArgument, "modules.json");
  }
  {
    BertEncoderOptions eo;
    eo.backend = backend_.get();
    eo.max_tokens = kPos + 1;
    WriteTinyFolder(dir_, w, {});
    ExpectLoadError(BertEncoder::Load(dir_.string(), eo), StatusCode::kInvalidArgument,
                    "max_position_embeddings");
    eo.backend = nullptr;
    eo.max_tokens = 0;
    ExpectLoadError(BertEncoder::Load(dir_.string(), eo), StatusCode::kInvalidArgument,
                    "backend");
  }
  // Bad ids at run time.
  auto enc = LoadTiny(w, {});
  ASSERT_TRUE(enc.ok()) << enc.status();
  const std::vector<std::vector<TokenId>> bad_id = {{2, kVocab, 3}};
  EXPECT_EQ((*enc)->EmbedIds(bad_id).status().code(), StatusCode::kInvalidArgument);
  const std::vector<std::vector<TokenId>> too_long = {std::vector<TokenId>(kMaxSeq + 1, 5)};
  EXPECT_EQ((*enc)->EmbedIds(too_long).status().code(), StatusCode::kInvalidArgument);
  const std::vector<std::vector<TokenId>> empty_seq = {{}};
  EXPECT_EQ((*enc)->EmbedIds(empty_seq).status().code(), StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// all-MiniLM-L6-v2 against tests/data/minilm_goldens.json.

class BertEncoderRealModelTest : public BertEncoderTest {
 protected:
  void SetUp() override {
    BertEncoderTest::SetUp();
    const fs::path model = fs::path(MUNINN_SOURCE_DIR) / "models" / "all-MiniLM-L6-v2";
    if (!fs::exists(model / "model.safetensors")) {
      GTEST_SKIP() << model << " is absent (scripts/setup.sh fetches it)";
    }
    std::ifstream f(fs::path(MUNINN_SOURCE_DIR) / "tests" / "data" / "minilm_goldens.json");
    ASSERT_TRUE(f.good()) << "tests/data/minilm_goldens.json is missing";
    goldens_ = nlohmann::json::parse(f);
    BertEncoderOptions eo;
    eo.backend = backend_.get();
    auto enc = BertEncoder::Load(model.string(), eo);
    ASSERT_TRUE(enc.ok()) << enc.status();
    encoder_ = std::move(enc).value();
  }

  static double Cosine(std::span<const float> a, const nlohmann::json& b) {
    double dot = 0, na = 0, nb = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const double y = b[i].get<double>();
      dot += a[i] * y;
      na += double{a[i]} * a[i];
      nb += y * y;
    }
    return dot / std::sqrt(na * nb);
  }

  nlohmann::json goldens_;
  std::unique_ptr<BertEncoder> encoder_;
};

TEST_F(BertEncoderRealModelTest, IdsMatchExactlyAndEmbeddingsCosineAtLeast0999) {
  EXPECT_EQ(encoder_->dim(), goldens_["dim"].get<int64_t>());
  EXPECT_EQ(encoder_->config().max_tokens, goldens_["max_seq_length"].get<int32_t>());
  std::vector<std::string> texts;
  for (const auto& c : goldens_["cases"]) texts.push_back(c["text"].get<std::string>());
  ASSERT_GE(texts.size(), 10u);
  auto emb = encoder_->Embed(texts);  // one batch of every text
  ASSERT_TRUE(emb.ok()) << emb.status();
  const size_t dim = static_cast<size_t>(encoder_->dim());
  double worst = 1.0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto& c = goldens_["cases"][i];
    auto ids = encoder_->Tokenize(texts[i]);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c["ids"].get<std::vector<TokenId>>()) << "text " << i << ": " << texts[i];
    const double cos = Cosine(std::span<const float>(emb->data() + i * dim, dim), c["embedding"]);
    EXPECT_GE(cos, 0.999) << "text " << i << ": " << texts[i];
    worst = std::min(worst, cos);
  }
  std::printf("worst cosine vs transformers: %.7f\n", worst);
  EXPECT_GE(worst, 0.99999);  // what float32 compute actually reaches; 0.999 is the contract
}

TEST_F(BertEncoderRealModelTest, LayerNormsMatchTransformersLayerByLayer) {
  for (size_t i : {size_t{0}, size_t{5}, size_t{12}}) {
    const auto& c = goldens_["cases"][i];
    const std::vector<std::vector<TokenId>> seq = {c["ids"].get<std::vector<TokenId>>()};
    std::vector<double> norms;
    auto hidden = encoder_->Forward(seq, [&](std::string_view, int32_t, const Tensor& h) {
      double s = 0;
      const float* x = h.data_as<const float>();
      for (int64_t k = 0; k < h.numel(); ++k) s += double{x[k]} * x[k];
      norms.push_back(std::sqrt(s));
    });
    ASSERT_TRUE(hidden.ok()) << hidden.status();
    const auto want = c["layer_norms"].get<std::vector<double>>();
    ASSERT_EQ(norms.size(), want.size());
    for (size_t l = 0; l < want.size(); ++l) {
      EXPECT_NEAR(norms[l], want[l], 1e-4 * want[l]) << "text " << i << " after layer "
                                                     << static_cast<int>(l) - 1;
    }
  }
}

}  // namespace
}  // namespace muninn::model
