// Crash test: a child process appends to a bank and reports every acknowledged append; we SIGKILL
// it at random moments, then reopen the bank and check that it verifies (RocksDB and FAISS agree,
// every record decodes, no partial chunk) and holds every acknowledged chunk intact.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "muninn/memory/memory_bank.h"
#include "tests/memory/memory_test_util.h"

namespace muninn::memory {
namespace {

struct Ack {
  ChunkId first_id;
  int count;
  DocumentId doc;
  int64_t position;
};

// Runs the helper, kills it with SIGKILL `run_ms` after it started (or after it said READY, when
// `after_ready`) and returns the complete ACK lines.
std::vector<Ack> RunAndKill(const std::string& bank_dir, uint64_t doc, int run_ms,
                            bool after_ready) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    const std::string doc_s = std::to_string(doc);
    ::execl(MUNINN_MEMORY_CRASH_HELPER, MUNINN_MEMORY_CRASH_HELPER, bank_dir.c_str(),
            doc_s.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(run_ms);
  if (after_ready) deadline += std::chrono::seconds(20);  // until READY, then run_ms more
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) break;
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) > 0) {
      const ssize_t n = ::read(fds[0], buf, sizeof(buf));
      if (n <= 0) break;  // the child died on its own: the checks below will say why
      out.append(buf, static_cast<size_t>(n));
      if (after_ready && out.find("READY\n") != std::string::npos) {
        after_ready = false;
        deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(run_ms);
      }
    }
  }
  ::kill(pid, SIGKILL);
  for (;;) {  // whatever the child wrote before it died
    const ssize_t n = ::read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the helper exited on its own (status " << status << ")";
  std::vector<Ack> acks;
  size_t start = 0;
  for (size_t nl; (nl = out.find('\n', start)) != std::string::npos; start = nl + 1) {
    std::istringstream line(out.substr(start, nl - start));
    std::string tag;
    Ack a{};
    if (line >> tag >> a.first_id >> a.count >> a.doc >> a.position && tag == "ACK") {
      acks.push_back(a);
    }
  }
  return acks;
}

void CrashLoop(int kills, uint32_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  testing::TempDir dir("crash");
  std::mt19937 rng(seed);
  std::vector<Ack> all;
  int64_t max_acked = 0;
  for (int i = 0; i < kills; ++i) {
    SCOPED_TRACE("kill " + std::to_string(i));
    // One run in five is killed at any moment from its start (during open and WAL recovery);
    // the others at any moment within 50 ms of appending.
    const bool after_ready = rng() % 5 != 0;
    const int run_ms = static_cast<int>(rng() % 50);
    std::vector<Ack> acks = RunAndKill(dir.path(), static_cast<uint64_t>(i), run_ms, after_ready);
    all.insert(all.end(), acks.begin(), acks.end());
    MemoryBankOptions o;  // the helper's shape, in case it died before creating the bank
    o.path = dir.path();
    o.dim = 16;
    o.n_head_kv = 2;
    o.head_dim = 32;
    o.kv_dtype = DType::kQ8_0;
    auto bank = MemoryBank::Open(o);
    ASSERT_TRUE(bank.ok()) << bank.status();
    auto report = (*bank)->Verify();
    ASSERT_TRUE(report.ok()) << report.status();
    ASSERT_TRUE(report->ok()) << report->messages.front();
    for (const Ack& a : all) {
      for (int c = 0; c < a.count; ++c) {
        const ChunkId id = a.first_id + static_cast<ChunkId>(c);
        auto rec = (*bank)->GetChunk(id);
        ASSERT_TRUE(rec.ok()) << "acknowledged chunk " << id << " lost: " << rec.status();
        testing::OwnedChunk want(a.doc, a.position + c * 4, 4, 16, 2, 32);
        ASSERT_EQ(rec->info.doc_id, a.doc);
        ASSERT_EQ(rec->info.position, a.position + c * 4);
        ASSERT_EQ(rec->tokens, want.tokens);
        ASSERT_EQ(rec->embedding, want.embedding);
        max_acked = std::max<int64_t>(max_acked, static_cast<int64_t>(id));
      }
    }
    // Search agrees with the records: every acknowledged chunk finds itself.
    if (!all.empty()) {
      const Ack& last = all.back();
      testing::OwnedChunk probe(last.doc, last.position, 4, 16, 2, 32);
      auto res = (*bank)->Search(probe.embedding, 1, 1, {}, false);
      ASSERT_TRUE(res.ok());
      ASSERT_EQ(res->at(0).size(), 1u);
      EXPECT_EQ(res->at(0)[0].id, last.first_id);
    }
    ASSERT_TRUE((*bank)->Close().ok());
  }
  EXPECT_GT(max_acked, 0) << "no append was ever acknowledged: the test proved nothing";
  std::printf("%d kills, %zu acknowledged appends, highest acknowledged chunk id %lld\n", kills,
              all.size(), static_cast<long long>(max_acked));
}

// The kill schedule comes from a fresh seed each run (printed on failure via SCOPED_TRACE).
TEST(MemoryBankCrashTest, FiftyKills) { CrashLoop(50, std::random_device{}()); }

TEST(MemoryBankCrashTest, TwoHundredKillsSlow) { CrashLoop(200, std::random_device{}()); }

}  // namespace
}  // namespace muninn::memory
