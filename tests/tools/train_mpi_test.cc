// `mpirun -np 2 muninn train --streams 4` against one process with `--streams 4`, and `-np 2`
// against `--streams 2` (issue 12): the same adapter and checkpoint bytes, because both sum the
// streams' gradients left to right in stream order (gradient_reducer.h). Also: a run under mpirun
// stopped and resumed (every stream's cursor is in the checkpoint) ends with the same bytes, and a
// stream count that is not a multiple of the process count is refused. Skipped when there is no
// mpirun or the build has no MPI.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "muninn/model/parallel_training.h"
#include "tests/model/tiny_lora_llama.h"

namespace muninn::tools {
namespace {

namespace fs = std::filesystem;
namespace tl = model::tiny_lora;

// Byte comparisons as booleans: gtest would print kilobytes of binary on a mismatch.
#define EXPECT_SAME_BYTES(a, b) EXPECT_TRUE((a) == (b)) << #a << " and " << #b << " differ"
#define EXPECT_OTHER_BYTES(a, b) EXPECT_TRUE((a) != (b)) << #a << " and " << #b << " are equal"

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string FindMpirun() {
  const char* path = std::getenv("PATH");
  std::string p = path != nullptr ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    const size_t end = p.find(':', start);
    const std::string dir =
        p.substr(start, end == std::string::npos ? std::string::npos : end - start);
    const std::string candidate = (dir.empty() ? "." : dir) + "/mpirun";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return "";
}

// Quotes for /bin/sh.
std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

class TrainMpiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mpirun_ = FindMpirun();
    if (mpirun_.empty()) GTEST_SKIP() << "no mpirun on PATH (Debian: openmpi-bin)";
    if (!model::BuiltWithMpi()) GTEST_SKIP() << "this build has no MPI (-DMUNINN_MPI=OFF)";
    dir_ = ::testing::TempDir() + "/muninn_train_mpi_" + std::to_string(::getpid());
    tl::WriteModel(dir_ + "/model");
    std::ofstream data(dir_ + "/data.jsonl");
    for (int d = 0; d < 6; ++d) {
      data << "{\"ids\": [";
      for (int i = 0; i < 30 + 11 * d; ++i) {
        data << (i ? "," : "")
             << tl::Raw(6000 + static_cast<uint64_t>(d), static_cast<uint64_t>(i)) % tl::kVocab;
      }
      data << "]}\n";
    }
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  std::vector<std::string> TrainArgs(const std::string& out) {
    return {MUNINN_CLI_BINARY,
            "train",
            "-m",
            dir_ + "/model",
            "-d",
            dir_ + "/data.jsonl",
            "-o",
            dir_ + "/" + out,
            "--block",
            "16",
            "--steps",
            "8",
            "--grad-accum",
            "2",
            "--lr",
            "1e-2",
            "--warmup",
            "2",
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
            "5",
            "--checkpoint-every",
            "2",
            "-t",
            "1"};
  }
  // Runs `args` (under mpirun -np `np` when np > 0) with one BLAS thread; the exit code.
  int Run(int np, const std::vector<std::string>& args) {
    std::string cmd = "OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 ";
    if (np > 0) {
      // OpenMPI's own allocations are reported as leaks by a sanitizer build's LeakSanitizer
      // at exit; the processes under mpirun do not check leaks (the other tests do).
      cmd += "ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0\" ";
      cmd += Quote(mpirun_) + " -np " + std::to_string(np) + " --oversubscribe";
      if (::geteuid() == 0) cmd += " --allow-run-as-root";
      cmd += " -x OPENBLAS_NUM_THREADS -x OMP_NUM_THREADS -x ASAN_OPTIONS";
    }
    for (const std::string& a : args) cmd += " " + Quote(a);
    cmd += " >>" + Quote(dir_ + "/log.txt") + " 2>&1";
    const int st = std::system(cmd.c_str());
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  std::string Log() { return ReadAll(dir_ + "/log.txt"); }
  std::string mpirun_, dir_;
};

// Four streams, two per process: f32 addition of two values is commutative, so only three or
// more streams can tell the fixed order (((P0 + P1) + P2) + P3) from another (reversed, or
// each rank's pair summed first as a local-sum-then-allreduce would).
TEST_F(TrainMpiTest, TwoProcessesEqualOneProcessWithTheSameStreams) {
  std::vector<std::string> two = TrainArgs("np2");
  two.insert(two.end(), {"--streams", "4"});
  ASSERT_EQ(Run(2, two), 0) << Log();
  std::vector<std::string> one = TrainArgs("np1");
  one.insert(one.end(), {"--streams", "4"});
  ASSERT_EQ(Run(0, one), 0) << Log();
  const std::string a = ReadAll(dir_ + "/np2/adapter/adapter_model.safetensors");
  ASSERT_FALSE(a.empty()) << Log();
  EXPECT_SAME_BYTES(a, ReadAll(dir_ + "/np1/adapter/adapter_model.safetensors"));
  EXPECT_SAME_BYTES(ReadAll(dir_ + "/np2/checkpoint.bin"), ReadAll(dir_ + "/np1/checkpoint.bin"));
  EXPECT_SAME_BYTES(ReadAll(dir_ + "/np2/adapter-lora.gguf"),
                    ReadAll(dir_ + "/np1/adapter-lora.gguf"));
  // Only rank 0 writes: one metrics line per step, each with both streams' tokens.
  std::ifstream m(dir_ + "/np2/metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(m, line);) ++lines;
  EXPECT_EQ(lines, 8);
  // -np 2 without --streams runs one stream per process: = one process with --streams 2.
  ASSERT_EQ(Run(2, TrainArgs("np2_default")), 0) << Log();
  std::vector<std::string> one2 = TrainArgs("np1_two");
  one2.insert(one2.end(), {"--streams", "2"});
  ASSERT_EQ(Run(0, one2), 0) << Log();
  EXPECT_SAME_BYTES(ReadAll(dir_ + "/np2_default/adapter/adapter_model.safetensors"),
                    ReadAll(dir_ + "/np1_two/adapter/adapter_model.safetensors"));
  EXPECT_OTHER_BYTES(a, ReadAll(dir_ + "/np1_two/adapter/adapter_model.safetensors"));
  // One stream in one process is another run.
  ASSERT_EQ(Run(0, TrainArgs("single")), 0) << Log();
  EXPECT_OTHER_BYTES(a, ReadAll(dir_ + "/single/adapter/adapter_model.safetensors"));
}

TEST_F(TrainMpiTest, ResumeUnderMpiAndRefusals) {
  ASSERT_EQ(Run(2, TrainArgs("full")), 0) << Log();
  std::vector<std::string> part = TrainArgs("part");
  part.insert(part.end(), {"--stop-after", "5"});
  ASSERT_EQ(Run(2, part), 0) << Log();
  std::vector<std::string> resume = TrainArgs("part");
  resume.push_back("--resume");
  ASSERT_EQ(Run(2, resume), 0) << Log();
  const std::string full = ReadAll(dir_ + "/full/adapter/adapter_model.safetensors");
  ASSERT_FALSE(full.empty());
  EXPECT_SAME_BYTES(full, ReadAll(dir_ + "/part/adapter/adapter_model.safetensors"));
  EXPECT_SAME_BYTES(ReadAll(dir_ + "/full/checkpoint.bin"), ReadAll(dir_ + "/part/checkpoint.bin"));
  // Resuming the two-stream run in one process with one stream is refused.
  EXPECT_NE(Run(0, resume), 0);
  EXPECT_NE(Log().find("data streams"), std::string::npos) << Log();
  // 3 streams over 2 processes.
  std::vector<std::string> three = TrainArgs("three");
  three.insert(three.end(), {"--streams", "3"});
  EXPECT_EQ(Run(2, three), 2) << Log();
  EXPECT_NE(Log().find("multiple of the number of MPI processes"), std::string::npos) << Log();
}

// With MemLong memory in the loop (--memory on the real model; skipped when set-up has not
// fetched it): every rank keeps its own bank, and a stream reads only what it wrote itself, so
// -np 2 still equals one process with --streams 2 byte for byte. The second stream starts in the
// middle of Genesis: its first block reads nothing, its second reads the first.
TEST_F(TrainMpiTest, MemoryStreamsUnderMpiEqualOneProcess) {
  const std::string root = MUNINN_SOURCE_DIR;
  for (const char* need : {"/models/SmolLM2-135M-Instruct.Q4_1.gguf", "/models/all-MiniLM-L6-v2",
                           "/data/genesis.txt"}) {
    if (!fs::exists(root + need)) GTEST_SKIP() << "no " << root + need << " (scripts/setup.sh)";
  }
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{MUNINN_CLI_BINARY, "train", "--memory", "--config",
                                    root + "/configs/smollm2-135m-memlong.json", "-d",
                                    root + "/data/genesis.txt", "-o", dir_ + "/" + out, "--block",
                                    "128", "--steps", "2", "-r", "2", "--seed", "4", "-t", "1"};
  };
  ASSERT_EQ(Run(2, args("mem_np2")), 0) << Log();
  std::vector<std::string> one = args("mem_np1");
  one.insert(one.end(), {"--streams", "2"});
  ASSERT_EQ(Run(0, one), 0) << Log();
  const std::string a = ReadAll(dir_ + "/mem_np2/adapter/adapter_model.safetensors");
  ASSERT_FALSE(a.empty()) << Log();
  EXPECT_SAME_BYTES(a, ReadAll(dir_ + "/mem_np1/adapter/adapter_model.safetensors"));
  EXPECT_SAME_BYTES(ReadAll(dir_ + "/mem_np2/checkpoint.bin"),
                    ReadAll(dir_ + "/mem_np1/checkpoint.bin"));
}

}  // namespace
}  // namespace muninn::tools
