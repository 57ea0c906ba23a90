// Checkpoint + ModelHParams: tiny random llama (GGUF and Hugging Face, single and sharded) and
// BERT checkpoints written by the test, their hyperparameters, tensor names and the errors for
// unknown architectures, missing tensors, wrong shapes and unsupported dtypes. RealModel tests
// read the SmolLM2 GGUF and the all-MiniLM-L6-v2 folder that scripts/setup.sh fetches.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "muninn/core/fp16.h"
#include "muninn/model/checkpoint.h"
#include "muninn/model/gguf_format.h"
#include "muninn/model/gguf_writer.h"
#include "muninn/model/model_hparams.h"
#include "muninn/model/safetensors_writer.h"

namespace muninn::model {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "muninn_ckpt_XXXXXX").string();
    MUNINN_CHECK(::mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A tiny llama: n_embd 64, 4 heads of 16, 2 KV heads, n_ff 96, 2 layers, vocab 40.
constexpr int64_t kEmbd = 64, kHead = 4, kHeadKv = 2, kHeadDim = 16, kFf = 96, kLayers = 2,
                  kVocab = 40;

struct TinyOptions {
  std::string skip;                   // a tensor to leave out
  std::string wrong_shape;            // a tensor written with its dims swapped
  bool tied = true;
  uint32_t matrix_type = 8;           // q8_0 for GGUF matrices
};

TinyOptions Skip(std::string name) {
  TinyOptions o;
  o.skip = std::move(name);
  return o;
}
TinyOptions WrongShape(std::string name) {
  TinyOptions o;
  o.wrong_shape = std::move(name);
  return o;
}
TinyOptions MatrixType(uint32_t type) {
  TinyOptions o;
  o.matrix_type = type;
  return o;
}
TinyOptions Tied(bool tied) {
  TinyOptions o;
  o.tied = tied;
  return o;
}

ModelHParams TinyHParams(CheckpointFormat format, bool tied) {
  ModelHParams hp;
  hp.arch = ModelArch::kLlama;
  hp.format = format;
  hp.n_vocab = kVocab;
  hp.n_embd = kEmbd;
  hp.n_layer = kLayers;
  hp.n_head = kHead;
  hp.n_head_kv = kHeadKv;
  hp.n_embd_head = kHeadDim;
  hp.n_ff = kFf;
  hp.tied_embeddings = tied;
  return hp;
}

std::vector<uint8_t> Random(size_t n, std::mt19937& rng) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng() % 64);  // keeps f16/q scales finite
  return v;
}

Status WriteTinyGguf(const std::string& path, const TinyOptions& opt) {
  GgufWriter w;
  w.SetMetadata("general.architecture", MetadataValue::String("llama"));
  w.SetMetadata("llama.embedding_length", MetadataValue::U32(kEmbd));
  w.SetMetadata("llama.block_count", MetadataValue::U32(kLayers));
  w.SetMetadata("llama.attention.head_count", MetadataValue::U32(kHead));
  w.SetMetadata("llama.attention.head_count_kv", MetadataValue::U32(kHeadKv));
  w.SetMetadata("llama.feed_forward_length", MetadataValue::U32(kFf));
  w.SetMetadata("llama.context_length", MetadataValue::U32(2048));
  w.SetMetadata("llama.attention.layer_norm_rms_epsilon", MetadataValue::F32(1e-5f));
  w.SetMetadata("llama.rope.freq_base", MetadataValue::F32(100000.0f));
  w.SetMetadata("llama.vocab_size", MetadataValue::U32(kVocab));
  std::mt19937 rng(11);
  const ModelHParams hp = TinyHParams(CheckpointFormat::kGguf, opt.tied);
  for (WeightRole role : RolesOf(hp)) {
    for (int64_t l = 0; l < (IsPerLayer(role) ? kLayers : 1); ++l) {
      const std::string name = TensorName(hp, role, IsPerLayer(role) ? l : -1);
      if (name == opt.skip) continue;
      Shape shape = ExpectedShape(hp, role);
      if (name == opt.wrong_shape) shape = Shape{shape[1], shape[0]};
      const bool matrix = shape.ndim() == 2 && role != WeightRole::kTokenEmbd;
      const uint32_t type = matrix ? opt.matrix_type : 0;
      const GgufTypeInfo* info = FindGgufType(type);
      const size_t bytes = static_cast<size_t>(shape.numel() / info->block_size) *
                           static_cast<size_t>(info->type_size);
      RETURN_IF_ERROR(w.AddRawTensor(name, type, shape, Random(bytes, rng)));
    }
  }
  return w.WriteFile(path);
}

std::string LlamaConfigJson(bool tied) {
  return R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 40, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 96, "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-05, "rope_theta": 100000, "rope_scaling": null,
    "tie_word_embeddings": )" + std::string(tied ? "true" : "false") + "}";
}

// Writes an HF llama folder; `shards` > 1 splits the tensors round-robin and writes an index.
Status WriteTinyHf(const std::string& dir, const TinyOptions& opt, int shards = 1,
                   const std::string& config = "") {
  WriteText(dir + "/config.json", config.empty() ? LlamaConfigJson(opt.tied) : config);
  std::vector<SafetensorsWriter> writers(static_cast<size_t>(shards));
  std::string index = R"({"metadata": {"total_size": 0}, "weight_map": {)";
  std::mt19937 rng(12);
  const ModelHParams hp = TinyHParams(CheckpointFormat::kHuggingFace, opt.tied);
  int i = 0;
  for (WeightRole role : RolesOf(hp)) {
    for (int64_t l = 0; l < (IsPerLayer(role) ? kLayers : 1); ++l) {
      const std::string name = TensorName(hp, role, IsPerLayer(role) ? l : -1);
      if (name == opt.skip) continue;
      Shape shape = ExpectedShape(hp, role);
      if (name == opt.wrong_shape) shape = Shape{shape[1], shape[0]};
      auto t = Tensor::Empty(DType::kBF16, shape);
      RETURN_IF_ERROR(t.status());
      for (int64_t k = 0; k < t->numel(); ++k) {
        t->data_as<uint16_t>()[k] = Fp32ToBf16(static_cast<float>(rng() % 100) / 100.0f);
      }
      const int s = i++ % shards;
      RETURN_IF_ERROR(writers[static_cast<size_t>(s)].AddTensor(name, *t));
      char shard_name[64];
      std::snprintf(shard_name, sizeof(shard_name), "model-%05d-of-%05d.safetensors", s + 1,
                    shards);
      index += std::string(i > 1 ? "," : "") + "\"" + name + "\": \"" + shard_name + "\"";
    }
  }
  index += "}}";
  if (shards == 1) return writers[0].WriteFile(dir + "/model.safetensors");
  for (int s = 0; s < shards; ++s) {
    char shard_name[64];
    std::snprintf(shard_name, sizeof(shard_name), "model-%05d-of-%05d.safetensors", s + 1, shards);
    RETURN_IF_ERROR(writers[static_cast<size_t>(s)].WriteFile(dir + "/" + shard_name));
  }
  WriteText(dir + "/model.safetensors.index.json", index);
  return Status::Ok();
}

TEST(CheckpointTest, OpensTinyGgufLlama) {
  TempDir dir;
  ASSERT_TRUE(WriteTinyGguf(dir / "m.gguf", {}).ok());
  auto ckpt = Checkpoint::Open(dir / "m.gguf");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const Checkpoint& c = **ckpt;
  EXPECT_EQ(c.format(), CheckpointFormat::kGguf);
  EXPECT_EQ(c.architecture(), "llama");
  EXPECT_EQ(c.file_count(), 1u);
  EXPECT_EQ(c.file_size(), fs::file_size(dir.path() / "m.gguf"));
  auto hp = ReadHParams(c);
  ASSERT_TRUE(hp.ok()) << hp.status();
  EXPECT_EQ(hp->n_embd, kEmbd);
  EXPECT_EQ(hp->n_head_kv, kHeadKv);
  EXPECT_EQ(hp->n_embd_head, kHeadDim);
  EXPECT_EQ(hp->rope.n_rot, kHeadDim);
  EXPECT_EQ(hp->rope.layout, RopeLayout::kInterleaved);  // GGUF Q/K rows are permuted
  EXPECT_EQ(hp->rope.freq_base, 100000.0f);
  EXPECT_TRUE(hp->tied_embeddings);
  EXPECT_TRUE(ValidateWeights(c, *hp).ok());
  auto k = GetWeight(c, *hp, WeightRole::kAttnK, 1);
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(k->dtype(), DType::kQ8_0);
  EXPECT_EQ(k->shape(), (Shape{kHeadKv * kHeadDim, kEmbd}));
  EXPECT_EQ(GetWeight(c, *hp, WeightRole::kAttnK, 2).status().code(), StatusCode::kOutOfRange);
  // Typed getters.
  EXPECT_EQ(*c.GetInt("llama.block_count"), kLayers);
  Status missing = c.GetInt("llama.nope").status();
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  EXPECT_NE(missing.message().find("'llama.nope' is missing"), std::string::npos) << missing;
  Status wrong = c.GetString("llama.block_count").status();
  EXPECT_EQ(wrong.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.message().find("is u32, expected a string"), std::string::npos) << wrong;
  EXPECT_EQ(*c.GetIntOr("llama.nope", 7), 7);
  EXPECT_FALSE(c.GetIntOr("general.architecture", 7).ok());
}

TEST(CheckpointTest, ReportsMissingTensorsWrongShapesAndDtypes) {
  TempDir dir;
  ASSERT_TRUE(WriteTinyGguf(dir / "skip.gguf", Skip("blk.1.ffn_up.weight")).ok());
  ASSERT_TRUE(WriteTinyGguf(dir / "shape.gguf", WrongShape("blk.0.attn_k.weight")).ok());
  ASSERT_TRUE(WriteTinyGguf(dir / "iq.gguf", MatrixType(20)).ok());  // iq4_nl: no kernels

  auto skip = Checkpoint::Open(dir / "skip.gguf");
  ASSERT_TRUE(skip.ok());
  Status s = ValidateWeights(**skip, *ReadHParams(**skip));
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("tensor 'blk.1.ffn_up.weight' is missing"), std::string::npos) << s;

  auto shape = Checkpoint::Open(dir / "shape.gguf");
  ASSERT_TRUE(shape.ok());
  s = ValidateWeights(**shape, *ReadHParams(**shape));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("tensor 'blk.0.attn_k.weight' has shape [64, 32], expected [32, 64]"),
            std::string::npos)
      << s;

  auto iq = Checkpoint::Open(dir / "iq.gguf");
  ASSERT_TRUE(iq.ok()) << iq.status();
  s = ValidateWeights(**iq, *ReadHParams(**iq));
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("iq4_nl"), std::string::npos) << s;
}

TEST(CheckpointTest, RejectsUnknownArchitectureAndBadHyperparameters) {
  TempDir dir;
  GgufWriter w;
  w.SetMetadata("general.architecture", MetadataValue::String("mamba"));
  ASSERT_TRUE(w.WriteFile(dir / "mamba.gguf").ok());
  auto c = Checkpoint::Open(dir / "mamba.gguf");
  ASSERT_TRUE(c.ok());
  Status s = ReadHParams(**c).status();
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("architecture 'mamba'"), std::string::npos) << s;

  // GQA that does not divide, and an unsupported rope scaling, via HF configs.
  ASSERT_TRUE(fs::create_directory(dir.path() / "gqa"));
  std::string cfg = LlamaConfigJson(true);
  cfg.replace(cfg.find("\"num_key_value_heads\": 2"), 24, "\"num_key_value_heads\": 3");
  ASSERT_TRUE(WriteTinyHf(dir / "gqa", {}, 1, cfg).ok());
  auto gqa = Checkpoint::Open(dir / "gqa");
  ASSERT_TRUE(gqa.ok()) << gqa.status();
  s = ReadHParams(**gqa).status();
  EXPECT_NE(s.message().find("not a multiple of n_head_kv"), std::string::npos) << s;

  ASSERT_TRUE(fs::create_directory(dir.path() / "rope"));
  cfg = LlamaConfigJson(true);
  cfg.replace(cfg.find("\"rope_scaling\": null"), 20,
              R"("rope_scaling": {"rope_type": "llama3", "factor": 8.0})");
  ASSERT_TRUE(WriteTinyHf(dir / "rope", {}, 1, cfg).ok());
  auto rope = Checkpoint::Open(dir / "rope");
  ASSERT_TRUE(rope.ok()) << rope.status();
  EXPECT_EQ(*rope->get()->GetFloat("rope_scaling.factor"), 8.0);  // nested keys are flattened
  s = ReadHParams(**rope).status();
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("'llama3'"), std::string::npos) << s;
}

TEST(CheckpointTest, OpensHuggingFaceLlamaSingleAndSharded) {
  for (int shards : {1, 3}) {
    for (bool tied : {true, false}) {
      TempDir dir;
      ASSERT_TRUE(WriteTinyHf(dir.path().string(), Tied(tied), shards).ok());
      auto ckpt = Checkpoint::Open(dir.path().string());
      ASSERT_TRUE(ckpt.ok()) << ckpt.status();
      const Checkpoint& c = **ckpt;
      EXPECT_EQ(c.format(), CheckpointFormat::kHuggingFace);
      EXPECT_EQ(c.architecture(), "llama");
      EXPECT_EQ(c.file_count(), static_cast<size_t>(shards));
      auto hp = ReadHParams(c);
      ASSERT_TRUE(hp.ok()) << hp.status();
      EXPECT_EQ(hp->rope.layout, RopeLayout::kHalves);
      EXPECT_EQ(hp->rope.freq_base, 100000.0f);
      EXPECT_EQ(hp->n_ctx_train, 8192);
      EXPECT_EQ(hp->tied_embeddings, tied);
      EXPECT_FLOAT_EQ(hp->norm_eps, 1e-5f);
      Status v = ValidateWeights(c, *hp);
      EXPECT_TRUE(v.ok()) << v;
      auto q = GetWeight(c, *hp, WeightRole::kAttnQ, 1);
      ASSERT_TRUE(q.ok()) << q.status();
      EXPECT_EQ(q->dtype(), DType::kBF16);
      EXPECT_EQ(q->shape(), (Shape{kHead * kHeadDim, kEmbd}));
      EXPECT_EQ(TensorName(*hp, WeightRole::kFfnGate, 1), "model.layers.1.mlp.gate_proj.weight");
    }
  }
}

TEST(CheckpointTest, RejectsBrokenHuggingFaceFolders) {
  TempDir dir;
  auto open_error = [&](const std::string& sub) {
    auto c = Checkpoint::Open(dir / sub);
    return c.ok() ? Status::Ok() : c.status();
  };
  fs::create_directory(dir.path() / "empty");
  EXPECT_NE(open_error("empty").message().find("config.json"), std::string::npos);
  fs::create_directory(dir.path() / "noweights");
  WriteText(dir / "noweights/config.json", LlamaConfigJson(true));
  EXPECT_NE(open_error("noweights").message().find("model.safetensors"), std::string::npos);
  fs::create_directory(dir.path() / "badjson");
  WriteText(dir / "badjson/config.json", "{\"model_type\": ");
  EXPECT_NE(open_error("badjson").message().find("invalid JSON"), std::string::npos);
  // An index that escapes the folder or names tensors its shard lacks.
  fs::create_directory(dir.path() / "escape");
  ASSERT_TRUE(WriteTinyHf(dir / "escape", {}, 2).ok());
  WriteText(dir / "escape/model.safetensors.index.json",
            R"({"weight_map": {"model.norm.weight": "../model-00001-of-00002.safetensors"}})");
  EXPECT_NE(open_error("escape").message().find("inside the folder"), std::string::npos);
  WriteText(dir / "escape/model.safetensors.index.json",
            R"({"weight_map": {"model.nope": "model-00001-of-00002.safetensors"}})");
  EXPECT_NE(open_error("escape").message().find("does not contain it"), std::string::npos);
  EXPECT_FALSE(Checkpoint::Open(dir / "does-not-exist").ok());
}

TEST(CheckpointTest, OpensBertFolderWithAndWithoutPrefix) {
  for (std::string prefix : {"", "bert."}) {
    TempDir dir;
    WriteText(dir / "config.json", R"({"model_type": "bert", "vocab_size": 50,
      "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
      "intermediate_size": 64, "max_position_embeddings": 16, "type_vocab_size": 2,
      "layer_norm_eps": 1e-12, "hidden_act": "gelu"})");
    ModelHParams hp;
    hp.arch = ModelArch::kBert;
    hp.format = CheckpointFormat::kHuggingFace;
    hp.bert_prefix = prefix;
    hp.n_vocab = 50;
    hp.n_embd = 32;
    hp.n_layer = 2;
    hp.n_head = hp.n_head_kv = 4;
    hp.n_embd_head = 8;
    hp.n_ff = 64;
    hp.n_ctx_train = 16;
    hp.n_token_types = 2;
    SafetensorsWriter w;
    for (WeightRole role : RolesOf(hp)) {
      for (int64_t l = 0; l < (IsPerLayer(role) ? 2 : 1); ++l) {
        auto t = Tensor::Zeros(DType::kF32, ExpectedShape(hp, role));
        ASSERT_TRUE(w.AddTensor(TensorName(hp, role, IsPerLayer(role) ? l : -1), *t).ok());
      }
    }
    ASSERT_TRUE(w.AddRawTensor(prefix + "embeddings.position_ids", "I64", {1, 16},
                               std::vector<uint8_t>(128)).ok());
    ASSERT_TRUE(w.WriteFile(dir / "model.safetensors").ok());
    auto c = Checkpoint::Open(dir.path().string());
    ASSERT_TRUE(c.ok()) << c.status();
    auto read = ReadHParams(**c);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(read->arch, ModelArch::kBert);
    EXPECT_EQ(read->bert_prefix, prefix);
    EXPECT_FALSE(read->use_rope);
    EXPECT_EQ(read->n_embd_head, 8);
    EXPECT_TRUE(ValidateWeights(**c, *read).ok());
    // The I64 tensor is listed but cannot be loaded.
    EXPECT_EQ((*c)->GetTensor(prefix + "embeddings.position_ids").status().code(),
              StatusCode::kUnimplemented);
  }
}

// ---- the real files (fetched by scripts/setup.sh; skipped when absent) ----

std::string ModelPath(const std::string& rel) {
  return std::string(MUNINN_SOURCE_DIR) + "/models/" + rel;
}

TEST(CheckpointTest, RealModelSmolLM2Gguf) {
  const std::string path = ModelPath("SmolLM2-135M-Instruct.Q4_1.gguf");
  if (!fs::exists(path)) GTEST_SKIP() << path << " is absent; scripts/setup.sh fetches it";
  auto c = Checkpoint::Open(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->architecture(), "llama");
  EXPECT_EQ((*c)->tensors().size(), 272u);
  auto hp = ReadHParams(**c);
  ASSERT_TRUE(hp.ok()) << hp.status();
  EXPECT_EQ(hp->n_embd, 576);
  EXPECT_EQ(hp->n_layer, 30);
  EXPECT_EQ(hp->n_head, 9);
  EXPECT_EQ(hp->n_head_kv, 3);
  EXPECT_EQ(hp->n_embd_head, 64);
  EXPECT_EQ(hp->n_ff, 1536);
  EXPECT_EQ(hp->n_vocab, 49152);
  EXPECT_EQ(hp->n_ctx_train, 8192);
  EXPECT_EQ(hp->rope.freq_base, 100000.0f);
  EXPECT_EQ(hp->rope.n_rot, 64);
  EXPECT_EQ(hp->rope.layout, RopeLayout::kInterleaved);
  EXPECT_NEAR(hp->norm_eps, 1e-5f, 1e-9f);
  EXPECT_TRUE(hp->tied_embeddings);  // no output.weight in this file
  Status v = ValidateWeights(**c, *hp);
  EXPECT_TRUE(v.ok()) << v;
  auto q = GetWeight(**c, *hp, WeightRole::kAttnQ, 3);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->dtype(), DType::kQ4_1);
  auto embd = GetWeight(**c, *hp, WeightRole::kTokenEmbd);
  ASSERT_TRUE(embd.ok());
  EXPECT_EQ(embd->dtype(), DType::kQ8_0);
  auto norm = GetWeight(**c, *hp, WeightRole::kOutputNorm);
  ASSERT_TRUE(norm.ok());
  for (int64_t i = 0; i < hp->n_embd; ++i) ASSERT_TRUE(std::isfinite(norm->data_as<float>()[i]));
  auto tokens = (*c)->FindMetadata("tokenizer.ggml.tokens")->AsStringArray();
  ASSERT_TRUE(tokens.ok());
  EXPECT_EQ(tokens->size(), 49152u);
  EXPECT_EQ((*tokens)[1], "<|im_start|>");
}

TEST(CheckpointTest, RealModelMiniLmFolder) {
  const std::string path = ModelPath("all-MiniLM-L6-v2");
  if (!fs::exists(path + "/model.safetensors")) {
    GTEST_SKIP() << path << " is absent; scripts/setup.sh fetches it";
  }
  auto c = Checkpoint::Open(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->architecture(), "bert");
  auto hp = ReadHParams(**c);
  ASSERT_TRUE(hp.ok()) << hp.status();
  EXPECT_EQ(hp->n_vocab, 30522);
  EXPECT_EQ(hp->n_embd, 384);
  EXPECT_EQ(hp->n_layer, 6);
  EXPECT_EQ(hp->n_head, 12);
  EXPECT_EQ(hp->n_embd_head, 32);
  EXPECT_EQ(hp->n_ff, 1536);
  EXPECT_EQ(hp->n_ctx_train, 512);
  EXPECT_EQ(hp->n_token_types, 2);
  EXPECT_FLOAT_EQ(hp->norm_eps, 1e-12f);
  Status v = ValidateWeights(**c, *hp);
  EXPECT_TRUE(v.ok()) << v;
  auto w = GetWeight(**c, *hp, WeightRole::kFfnDown, 5);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->dtype(), DType::kF32);
  EXPECT_EQ(w->shape(), (Shape{384, 1536}));
}

}  // namespace
}  // namespace muninn::model
