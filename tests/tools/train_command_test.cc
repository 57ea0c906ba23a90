// `muninn train` as a user runs it, on the tiny random llama of tests/model/tiny_lora_llama.h
// with {"ids"} JSONL data: a run SIGKILLed at a random step (possibly inside a checkpoint write)
// and resumed with --resume ends with the same adapter and checkpoint bytes as an uninterrupted
// run; bad flags and data exit with code 2 and a message.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "muninn/model/gguf_file.h"
#include "tests/model/tiny_lora_llama.h"
#include "tests/tools/run_cli.h"

extern char** environ;

namespace muninn::tools {
namespace {

namespace tl = model::tiny_lora;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

int64_t CountLines(const std::string& path) {
  std::ifstream in(path);
  int64_t n = 0;
  std::string line;
  while (std::getline(in, line)) ++n;
  return n;
}

pid_t Spawn(const std::vector<std::string>& args) {
  std::vector<std::string> all = {MUNINN_CLI_BINARY};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

int Wait(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

class TrainCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/muninn_train_cli_" + std::to_string(::getpid());
    tl::WriteModel(dir_ + "/model");
    std::ofstream data(dir_ + "/data.jsonl");
    for (int d = 0; d < 6; ++d) {
      data << "{\"ids\": [";
      for (int i = 0; i < 30 + 11 * d; ++i) {
        data << (i ? "," : "")
             << tl::Raw(5000 + static_cast<uint64_t>(d), static_cast<uint64_t>(i)) % tl::kVocab;
      }
      data << "]}\n";
    }
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::vector<std::string> Args(const std::string& out) {
    return {"train",
            "-m",
            dir_ + "/model",
            "-d",
            dir_ + "/data.jsonl",
            "-o",
            dir_ + "/" + out,
            "--block",
            "16",
            "--steps",
            "150",
            "--grad-accum",
            "2",
            "--lr",
            "1e-2",
            "--warmup",
            "5",
            "--first-layer",
            "1",
            "-r",
            "4",
            "--alpha",
            "8",
            "--dropout",
            "0.1",
            "--weight-decay",
            "0.01",
            "--seed",
            "3",
            "--checkpoint-every",
            "2",
            "-t",
            "1"};
  }
  std::string dir_;
};

TEST_F(TrainCommandTest, SigkillAtARandomStepThenResumeGivesTheUninterruptedAdapter) {
  ASSERT_EQ(Wait(Spawn(Args("full"))), 0);
  const std::string full = ReadAll(dir_ + "/full/adapter/adapter_model.safetensors");
  ASSERT_FALSE(full.empty());

  std::random_device rd;
  const int64_t kill_at = 4 + static_cast<int64_t>(rd() % 120);  // a metrics line, >= 2 checkpoints
  std::printf("killing after %lld metrics lines\n", static_cast<long long>(kill_at));
  std::fflush(stdout);
  const pid_t pid = Spawn(Args("killed"));
  ASSERT_GT(pid, 0);
  const std::string metrics = dir_ + "/killed/metrics.jsonl";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (CountLines(metrics) < kill_at && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  ::kill(pid, SIGKILL);
  const int rc = Wait(pid);
  ASSERT_TRUE(rc == 128 + SIGKILL || rc == 0) << rc;  // 0: it finished before the kill landed
  std::printf("exit %d at %lld metrics lines\n", rc, static_cast<long long>(CountLines(metrics)));
  std::vector<std::string> resume = Args("killed");
  resume.push_back("--resume");
  ASSERT_EQ(Wait(Spawn(resume)), 0);
  EXPECT_EQ(ReadAll(dir_ + "/killed/adapter/adapter_model.safetensors"), full);
  EXPECT_EQ(ReadAll(dir_ + "/killed/checkpoint.bin"), ReadAll(dir_ + "/full/checkpoint.bin"));
}

// --plot is redrawn at every evaluation: while a long run is still going (100000 steps), the
// picture is there once an evaluation (every 5 steps) has passed; the step-5 plot is drawn before
// step 6's metrics line is written, so seeing 7 lines means it is complete.
TEST_F(TrainCommandTest, PlotIsDrawnAtEachEvaluationNotOnlyAtTheEnd) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "gnuplot is not installed (scripts/setup.sh installs gnuplot-nox)";
  }
  std::vector<std::string> a = Args("plotted");
  a[10] = "100000";  // --steps: the run cannot end (and draw its final plot) during the test
  const std::string png = dir_ + "/plotted/loss.png";
  a.insert(a.end(), {"--eval-data", dir_ + "/data.jsonl", "--eval-blocks", "2", "--eval-every",
                     "5", "--plot", png});
  const pid_t pid = Spawn(a);
  ASSERT_GT(pid, 0);
  const std::string metrics = dir_ + "/plotted/metrics.jsonl";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (CountLines(metrics) < 7 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const bool drawn = std::filesystem::exists(png) && std::filesystem::file_size(png) > 1000u;
  ::kill(pid, SIGKILL);
  EXPECT_EQ(Wait(pid), 128 + SIGKILL);
  EXPECT_GE(CountLines(metrics), 7);
  EXPECT_TRUE(drawn) << png << " not written at the step-5 evaluation";
}

// Train on the GGUF form, then `lora merge` and `logits --lora` give the same logits (the PEFT
// folder goes through Hugging Face order and back), different from the base model's.
TEST_F(TrainCommandTest, LoraMergeMatchesLogitsWithLora) {
  const std::string gguf = dir_ + "/tiny.gguf";
  tl::WriteGgufModel(gguf);
  std::vector<std::string> a = Args("gguf_run");
  a[2] = gguf;
  a[10] = "20";  // --steps
  std::string out;
  ASSERT_EQ(testing::RunCli(a, &out), 0);
  const std::string adapter = dir_ + "/gguf_run/adapter";
  ASSERT_EQ(
      testing::RunCli({"lora", "merge", "-m", gguf, "--lora", adapter, "-o", dir_ + "/merged.gguf"},
                      &out),
      0);
  auto top = [&](std::vector<std::string> args) {
    std::string o;
    EXPECT_EQ(testing::RunCli(args, &o), 0);
    const size_t at = o.find("\"top\"");
    return at == std::string::npos ? std::string() : o.substr(at);
  };
  const std::vector<std::string> ids = {"--ids", "5,17,99,3,250", "--top", "5", "--json"};
  auto with = [&](std::vector<std::string> head) {
    head.insert(head.end(), ids.begin(), ids.end());
    return head;
  };
  const std::string merged = top(with({"logits", "-m", dir_ + "/merged.gguf"}));
  const std::string lora = top(with({"logits", "-m", gguf, "--lora", adapter}));
  const std::string base = top(with({"logits", "-m", gguf}));
  ASSERT_FALSE(merged.empty());
  EXPECT_EQ(merged, lora);
  EXPECT_NE(merged, base);
  EXPECT_EQ(
      testing::RunCli(
          {"lora", "merge", "-m", gguf, "--lora", dir_ + "/nothing", "-o", dir_ + "/x.gguf"}, &out),
      2);
  // --type: a type muninn cannot write is refused (code 2) before anything is written; q8_0
  // writes the adapted matrices as q8_0, the others as they were.
  for (const char* type : {"q8_1", "q4_K", "f64"}) {
    EXPECT_EQ(testing::RunCli({"lora", "merge", "-m", gguf, "--lora", adapter, "-o",
                               dir_ + "/x.gguf", "--type", type},
                              &out),
              2)
        << type;
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/x.gguf"));
  ASSERT_EQ(testing::RunCli({"lora", "merge", "-m", gguf, "--lora", adapter, "-o",
                             dir_ + "/q8.gguf", "--type", "q8_0"},
                            &out),
            0);
  auto q8 = model::GgufFile::Open(dir_ + "/q8.gguf");
  ASSERT_TRUE(q8.ok()) << q8.status();
  EXPECT_EQ((*q8)->FindTensor("blk.1.attn_q.weight")->dtype, DType::kQ8_0);
  EXPECT_EQ((*q8)->FindTensor("blk.0.attn_q.weight")->dtype, DType::kF32);
}

TEST_F(TrainCommandTest, BadFlagsAndDataExitWithCode2) {
  std::string out;
  std::vector<std::string> a = Args("bad");
  a.push_back("--targets");
  a.push_back("q,x");
  EXPECT_EQ(testing::RunCli(a, &out), 2);
  a = Args("bad");
  a[4] = dir_ + "/missing.jsonl";
  EXPECT_EQ(testing::RunCli(a, &out), 2);
  a = Args("bad");
  a.push_back("--decay");
  a.push_back("sideways");
  EXPECT_EQ(testing::RunCli(a, &out), 2);
  a = Args("bad");
  a[10] = "0";  // --steps 0
  EXPECT_EQ(testing::RunCli(a, &out), 2);
  // A bottom cache for the recall task (fresh examples every step) is refused before anything
  // is made.
  a = Args("bad_cache");
  a.insert(a.end(), {"--task", "recall", "--bottom-cache", dir_ + "/bc"});
  EXPECT_EQ(testing::RunCli(a, &out), 2);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/bc"));
}

// --task recall on the real default model and embedder (skipped when set-up has not fetched them):
// the synthetic examples, the MemLong session's bank and the curriculum run end to end, the
// held-out loss is logged, and memory settings the run cannot serve are refused.
TEST(TrainRecallCommandTest, RecallTaskTrainsOnTheRealModel) {
  const std::string root = MUNINN_SOURCE_DIR;
  for (const char* need : {"/models/SmolLM2-135M-Instruct.Q4_1.gguf", "/models/all-MiniLM-L6-v2",
                           "/data/genesis.txt"}) {
    if (!std::filesystem::exists(root + need)) GTEST_SKIP() << "no " << root + need << " (scripts/setup.sh)";
  }
  const std::string out = ::testing::TempDir() + "/muninn_train_recall_" + std::to_string(::getpid());
  std::error_code ec;
  std::filesystem::remove_all(out, ec);
  std::vector<std::string> a = {"train", "--task", "recall", "--config",
                                root + "/configs/smollm2-135m-memlong.json", "-d",
                                root + "/data/genesis.txt", "-o", out, "--examples", "2",
                                "--eval-examples", "1", "--pool", "4", "--steps", "2",
                                "--grad-accum", "1", "--gold-only-steps", "1",
                                "--local-filler-max", "64", "-r", "2", "-t", "2"};
  std::string printed;
  ASSERT_EQ(testing::RunCli(a, &printed), 0);
  EXPECT_TRUE(std::filesystem::exists(out + "/adapter/adapter_model.safetensors"));
  std::ifstream in(out + "/metrics.jsonl");
  std::string line, last;
  int lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    last = line;
  }
  EXPECT_EQ(lines, 2);
  EXPECT_NE(last.find("\"eval_loss\""), std::string::npos) << last;
  std::filesystem::remove_all(out, ec);
  // Language-modelling blocks mixed in (--lm-data): one after every recall example here, so the
  // two steps run a recall block and a Genesis block with its stream memory.
  std::vector<std::string> mixed = a;
  mixed.insert(mixed.end(), {"--lm-data", root + "/data/genesis.txt", "--lm-every", "1",
                             "--block", "64"});
  ASSERT_EQ(testing::RunCli(mixed, &printed), 0);
  EXPECT_TRUE(std::filesystem::exists(out + "/adapter/adapter_model.safetensors"));
  std::filesystem::remove_all(out, ec);
  mixed.back() = "0";  // --block 0
  EXPECT_EQ(testing::RunCli(mixed, &printed), 2);
  std::filesystem::remove_all(out, ec);
  // The memory layer's K/V come from the frozen model: training it is refused; so is --eval-data,
  // and an unknown task.
  std::ifstream cfg(root + "/configs/smollm2-135m-memlong.json");
  const std::string m = std::to_string(
      nlohmann::json::parse(cfg)["long_context"]["memory_layer"].get<int>());
  std::vector<std::string> b = a;
  b.push_back("--first-layer");
  b.push_back(m);
  EXPECT_EQ(testing::RunCli(b, &printed), 2);
  // At the memory layer itself only q and o may adapt (its K/V, and so its norm, stay frozen).
  b = a;
  b.insert(b.end(), {"--first-layer", m, "--targets", "q,o"});
  EXPECT_EQ(testing::RunCli(b, &printed), 2);
  b.push_back("--no-norms");
  EXPECT_EQ(testing::RunCli(b, &printed), 0);
  std::filesystem::remove_all(out, ec);
  b = a;
  b.push_back("--eval-data");
  b.push_back(root + "/data/genesis.txt");
  EXPECT_EQ(testing::RunCli(b, &printed), 2);
  b = a;
  b[2] = "copy";
  EXPECT_EQ(testing::RunCli(b, &printed), 2);
  std::filesystem::remove_all(out, ec);
}

// --memory-gates on the real model: the recall run trains per-head memory logit biases of the
// trained retrieval layers, saves them beside the PEFT files (not in the llama.cpp GGUF), and the
// folder loads with --lora; resuming without the flag, and the flag without memory, are refused.
TEST(TrainRecallCommandTest, MemoryGatesTrainAndLoadWithLora) {
  const std::string root = MUNINN_SOURCE_DIR;
  const std::string model = root + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  for (const std::string& need : {model, root + "/models/all-MiniLM-L6-v2",
                                  root + "/data/genesis.txt"}) {
    if (!std::filesystem::exists(need)) GTEST_SKIP() << "no " << need << " (scripts/setup.sh)";
  }
  const std::string out =
      ::testing::TempDir() + "/muninn_train_gates_" + std::to_string(::getpid());
  std::error_code ec;
  std::filesystem::remove_all(out, ec);
  std::vector<std::string> a = {"train", "--task", "recall", "--config",
                                root + "/configs/smollm2-135m-memlong.json", "-d",
                                root + "/data/genesis.txt", "-o", out, "--examples", "2",
                                "--pool", "4", "--steps", "2", "--gold-only-steps", "1",
                                "--local-filler-max", "64", "-r", "2", "-t", "2",
                                "--memory-gates", "--gate-lr", "1e-2"};
  std::string printed;
  ASSERT_EQ(testing::RunCli(a, &printed), 0);
  EXPECT_TRUE(std::filesystem::exists(out + "/adapter/adapter_model.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(out + "/adapter/memory_gates.safetensors"));
  const std::string gguf = ReadAll(out + "/adapter-lora.gguf");
  EXPECT_FALSE(gguf.empty());
  EXPECT_EQ(gguf.find("memory_gate"), std::string::npos);
  EXPECT_EQ(CountLines(out + "/metrics.jsonl"), 2);
  // The folder (LoRA + gates) loads with --lora.
  std::string with;
  ASSERT_EQ(testing::RunCli({"logits", "-m", model, "--ids", "504,3458,282", "--lora",
                             out + "/adapter"},
                            &with),
            0);
  EXPECT_FALSE(with.empty());
  // Resuming without --memory-gates is another run: refused.
  std::vector<std::string> b(a.begin(), a.end() - 3);
  b.push_back("--resume");
  EXPECT_EQ(testing::RunCli(b, &printed), 1);
  std::filesystem::remove_all(out, ec);
  // Gates need memory in the loop.
  const std::string ids = out + "_ids.jsonl";
  {
    std::ofstream f(ids);
    f << "{\"ids\": [1, 2, 3, 4, 5, 6, 7, 8]}\n";
  }
  EXPECT_EQ(testing::RunCli({"train", "-m", model, "-d", ids, "-o", out, "--steps", "1",
                             "--memory-gates"},
                            &printed),
            2);
  EXPECT_EQ(testing::RunCli({"train", "-m", model, "-d", ids, "-o", out, "--steps", "1",
                             "--gate-lr", "1e-2"},
                            &printed),
            2);  // --gate-lr without --memory-gates
  std::filesystem::remove_all(out, ec);
  std::filesystem::remove(ids, ec);
}

// --memory (MemLong's protocol on language-modelling data) on the real model: the second block
// reads the first one's chunks from the stream's bank; held-out text keeps its own streams.
TEST(TrainRecallCommandTest, StreamMemoryTrainsOnTheRealModel) {
  const std::string root = MUNINN_SOURCE_DIR;
  for (const char* need : {"/models/SmolLM2-135M-Instruct.Q4_1.gguf", "/models/all-MiniLM-L6-v2",
                           "/data/genesis.txt", "/data/ruth.txt"}) {
    if (!std::filesystem::exists(root + need)) GTEST_SKIP() << "no " << root + need << " (scripts/setup.sh)";
  }
  const std::string out = ::testing::TempDir() + "/muninn_train_stream_" + std::to_string(::getpid());
  std::error_code ec;
  std::filesystem::remove_all(out, ec);
  std::vector<std::string> a = {"train", "--memory", "--config",
                                root + "/configs/smollm2-135m-memlong.json", "-d",
                                root + "/data/genesis.txt", "--eval-data", root + "/data/ruth.txt",
                                "--eval-blocks", "2", "-o", out, "--block", "256", "--steps", "2",
                                "-r", "2", "-t", "2"};
  std::string printed;
  ASSERT_EQ(testing::RunCli(a, &printed), 0);
  EXPECT_TRUE(std::filesystem::exists(out + "/adapter/adapter_model.safetensors"));
  // Resuming with other memory settings is refused (they are part of the run description).
  std::vector<std::string> b = a;
  b.push_back("--resume");
  b.push_back("--query-tokens");
  b.push_back("64");
  EXPECT_EQ(testing::RunCli(b, &printed), 1);
  std::filesystem::remove_all(out, ec);
}

}  // namespace
}  // namespace muninn::tools
