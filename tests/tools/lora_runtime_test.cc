// `--lora PATH[:SCALE]` and the config key "lora" on the long-context commands (Runtime): on the
// tiny random llama of tests/model/tiny_lora_llama.h written as a GGUF with a byte-level
// vocabulary, `muninn eval perplexity` changes with an adapter, is unchanged with scale 0, the
// config key gives what the flag gives (relative path resolved beside configs/), the flag
// overrides the key, and a missing or incompatible adapter is a clear error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "muninn/core/cpu_backend.h"
#include "muninn/model/model_loader.h"
#include "muninn/model/peft_adapter.h"
#include "tests/model/tiny_lora_llama.h"
#include "tests/tools/run_cli.h"
#include "tools/src/app_config.h"
#include "tools/src/runtime.h"

namespace muninn::tools {
namespace {

namespace fs = std::filesystem;
namespace tl = model::tiny_lora;

class LoraRuntimeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(::testing::TempDir() + "/muninn_lora_rt_" + std::to_string(::getpid()));
    fs::create_directories(*dir_ + "/configs");
    tl::WriteGgufModel(*dir_ + "/tiny.gguf", /*byte_tokenizer=*/true);
    // The goldens' adapter (every matrix of layers 1-2, B non-zero) as a PEFT folder.
    auto backend = CreateCpuBackend(CpuBackendOptions{});
    ASSERT_TRUE(backend.ok()) << backend.status();
    model::LoadModelOptions lo;
    lo.load_tokenizer = false;
    auto m = model::LoadModel(*dir_ + "/tiny.gguf", backend->get(), lo);
    ASSERT_TRUE(m.ok()) << m.status();
    auto p =
        model::LoraParams::Create(m->model->config(), m->model->weights(), tl::AdapterConfig());
    ASSERT_TRUE(p.ok()) << p.status();
    tl::SetAdapterValues(&*p);
    ASSERT_TRUE(model::WritePeftAdapter(*p, m->model->weights(), *dir_ + "/adapter", "tiny").ok());
    std::string text;
    for (int i = 0; i < 40; ++i) text += "the quick brown fox " + std::to_string(i) + ". ";
    std::ofstream(*dir_ + "/text.txt") << text;
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
  }

  // A config for the tiny model; `lora_json` is the value of "lora" ("" = no key).
  static std::string WriteConfig(const std::string& name, const std::string& lora_json,
                                 int memory_layer = 1) {
    const std::string path = *dir_ + "/configs/" + name + ".json";
    std::ofstream(path) << R"({"model": ")" << *dir_ << R"(/tiny.gguf", "embedder": "hidden",)"
                        << (lora_json.empty() ? "" : "\"lora\": " + lora_json + ",")
                        << R"( "long_context": {"memory_layer": )" << memory_layer
                        << R"(, "retrieval_layers": [)" << memory_layer << R"(, 2],
        "chunk_tokens": 16, "top_k": 2, "local_window": 64}})";
    return path;
  }

  // The sliding-window perplexity `muninn eval perplexity` prints; -1 when the command fails.
  static double Perplexity(const std::string& config, const std::vector<std::string>& extra) {
    const std::string json = *dir_ + "/ppl.json";
    fs::remove(json);
    std::vector<std::string> args = {
        "eval",        "perplexity", "--config", config, "--text",     *dir_ + "/text.txt",
        "--seq-len",   "48",         "--scored", "16",   "--windows",  "2",
        "--no-memory", "--no-full",  "-t",       "1",    "--json-out", json};
    args.insert(args.end(), extra.begin(), extra.end());
    std::string out;
    if (testing::RunCli(args, &out) != 0) return -1.0;
    std::ifstream in(json);
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return -1.0;
    return j["baselines"]["ppl_sliding_window"].get<double>();
  }

  static std::string* dir_;
};
std::string* LoraRuntimeTest::dir_ = nullptr;

TEST_F(LoraRuntimeTest, ConfigKeyParsesAndResolvesBesideConfigs) {
  auto c = LoadAppConfig(WriteConfig("s", R"("adapter:0.5")"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(fs::path(c->lora.path), fs::path(*dir_) / "adapter");
  EXPECT_EQ(c->lora.scale, 0.5f);
  c = LoadAppConfig(WriteConfig("o", R"({"path": "adapter", "scale": 2})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(fs::path(c->lora.path), fs::path(*dir_) / "adapter");
  EXPECT_EQ(c->lora.scale, 2.0f);
  c = LoadAppConfig(WriteConfig("none", ""));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->lora.path.empty());
  for (const char* bad : {"3", R"({"scale": 1})", R"({"path": "adapter", "scale": "x"})",
                          R"({"path": "adapter", "mult": 1})", R"("")"}) {
    auto b = LoadAppConfig(WriteConfig("bad", bad));
    ASSERT_FALSE(b.ok()) << bad;
    EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(b.status().message().find("lora"), std::string::npos) << b.status();
  }
}

TEST_F(LoraRuntimeTest, EvalPerplexityUsesTheAdapterFromFlagOrConfig) {
  const std::string plain = WriteConfig("plain", "");
  const double base = Perplexity(plain, {});
  ASSERT_GT(base, 0.0);
  const std::string adapter = *dir_ + "/adapter";
  const double with = Perplexity(plain, {"--lora", adapter});
  ASSERT_GT(with, 0.0);
  EXPECT_NE(with, base);
  EXPECT_EQ(Perplexity(plain, {"--lora", adapter + ":0"}), base);
  EXPECT_EQ(Perplexity(plain, {"--lora", adapter + ":1"}), with);
  const double half = Perplexity(plain, {"--lora", adapter + ":0.5"});
  EXPECT_NE(half, base);
  EXPECT_NE(half, with);
  // The config key (relative, resolved beside configs/) gives the flag's result; the flag wins.
  const std::string keyed = WriteConfig("keyed", R"({"path": "adapter", "scale": 0.5})");
  EXPECT_EQ(Perplexity(keyed, {}), half);
  EXPECT_EQ(Perplexity(keyed, {"--lora", adapter + ":0"}), base);
  EXPECT_EQ(Perplexity(keyed, {"--lora", "none"}), base);
  EXPECT_EQ(Perplexity(keyed, {"--lora", adapter}), with);
}

// What ingest stores comes from the adapted model too: the hidden-state embedder (memory layer 2,
// above the adapted layer 1) gives other vectors with the adapter, the base ones at scale 0.
TEST_F(LoraRuntimeTest, TheHiddenStateEmbedderReadsTheAdaptedModel) {
  auto embed = [&](const std::string& lora) -> std::vector<float> {
    RuntimeFlags flags;
    flags.config = WriteConfig("layer2", "", /*memory_layer=*/2);
    flags.threads = 1;
    flags.lora = lora;
    auto rt = Runtime::Open(flags);
    EXPECT_TRUE(rt.ok()) << rt.status();
    if (!rt.ok()) return {};
    const std::string text = "the quick brown fox";
    const std::vector<model::TokenId> ids =
        (*rt)->tokenizer().Encode(text, /*add_special=*/false, /*parse_special=*/false);
    EXPECT_EQ(ids.size(), text.size());  // one token per byte
    const retriever::EmbedRequest req{text, ids};
    auto v = (*rt)->embedder()->Embed(std::span<const retriever::EmbedRequest>(&req, 1));
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *v : std::vector<float>{};
  };
  const std::vector<float> base = embed("");
  ASSERT_FALSE(base.empty());
  EXPECT_NE(embed(*dir_ + "/adapter"), base);
  EXPECT_EQ(embed(*dir_ + "/adapter:0"), base);
}

TEST_F(LoraRuntimeTest, MissingOrIncompatibleAdapterIsAClearError) {
  RuntimeFlags flags;
  flags.config = WriteConfig("plain", "");
  flags.threads = 1;
  flags.lora = *dir_ + "/no_such_adapter";
  auto rt = Runtime::Open(flags);
  ASSERT_FALSE(rt.ok());
  EXPECT_EQ(rt.status().code(), StatusCode::kNotFound);
  EXPECT_NE(rt.status().message().find("no_such_adapter"), std::string::npos) << rt.status();
  EXPECT_EQ(Perplexity(flags.config, {"--lora", flags.lora}), -1.0);

  // The same folder claiming rank 8: its tensors no longer fit.
  const std::string bad = *dir_ + "/bad_adapter";
  fs::create_directories(bad);
  fs::copy_file(*dir_ + "/adapter/adapter_model.safetensors", bad + "/adapter_model.safetensors",
                fs::copy_options::overwrite_existing);
  std::ifstream in(*dir_ + "/adapter/adapter_config.json");
  nlohmann::json cfg = nlohmann::json::parse(in);
  cfg["r"] = 8;
  std::ofstream(bad + "/adapter_config.json") << cfg.dump();
  flags.lora = bad;
  rt = Runtime::Open(flags);
  ASSERT_FALSE(rt.ok());
  EXPECT_NE(rt.status().message().find("bad_adapter"), std::string::npos) << rt.status();

  flags.lora = *dir_ + "/adapter:nan";
  rt = Runtime::Open(flags);
  ASSERT_FALSE(rt.ok());
  EXPECT_EQ(rt.status().code(), StatusCode::kInvalidArgument) << rt.status();

  // With the adapter it opens, and the session runs on the adapted model.
  flags.lora = *dir_ + "/adapter";
  rt = Runtime::Open(flags);
  ASSERT_TRUE(rt.ok()) << rt.status();
}

}  // namespace
}  // namespace muninn::tools
