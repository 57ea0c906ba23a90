// `muninn bank stats|verify|compact|documents|delete|repair --bank DIR`: inspect and maintain a
// memory bank on disk.
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "command_registry.h"
#include "document_catalog.h"
#include "muninn/core/logging.h"
#include "muninn/memory/memory_bank.h"

namespace muninn::tools {
namespace {

using memory::BankStats;
using memory::MemoryBank;
using memory::MemoryBankOptions;

nlohmann::json StatsJson(const BankStats& s) {
  return {{"chunks", s.n_chunks},
          {"documents", s.n_documents},
          {"tokens", s.n_tokens},
          {"stored_bytes", s.stored_bytes},
          {"kv_bytes", s.kv_bytes},
          {"dim", s.dim},
          {"n_head_kv", s.n_head_kv},
          {"head_dim", s.head_dim},
          {"kv_dtype", std::string(DTypeName(s.kv_dtype))},
          {"index_factory", s.index_factory},
          {"index_ntotal", s.index_ntotal},
          {"index_tombstones", s.index_tombstones},
          {"index_recovery", s.index_recovery},
          {"mutation_seq", s.mutation_seq},
          {"next_id", s.next_id},
          {"evicted_chunks", s.evicted_chunks}};
}

void PrintStats(const BankStats& s) {
  std::printf(
      "chunks:           %lld in %lld documents, %lld tokens\n"
      "stored:           %.1f MiB (K/V %.1f MiB, %s, %lld heads x %lld)\n"
      "embeddings:       dim %lld\n"
      "index:            %s, %lld vectors (%lld tombstones), on open: %s\n"
      "mutation seq:     %llu (next chunk id %llu, %lld evicted so far)\n",
      static_cast<long long>(s.n_chunks), static_cast<long long>(s.n_documents),
      static_cast<long long>(s.n_tokens), static_cast<double>(s.stored_bytes) / (1 << 20),
      static_cast<double>(s.kv_bytes) / (1 << 20), std::string(DTypeName(s.kv_dtype)).c_str(),
      static_cast<long long>(s.n_head_kv), static_cast<long long>(s.head_dim),
      static_cast<long long>(s.dim), s.index_factory.c_str(), static_cast<long long>(s.index_ntotal),
      static_cast<long long>(s.index_tombstones), s.index_recovery.c_str(),
      static_cast<unsigned long long>(s.mutation_seq), static_cast<unsigned long long>(s.next_id),
      static_cast<long long>(s.evicted_chunks));
}

// Opens an existing bank taking every shape from it. Prints the error and returns null on failure.
std::unique_ptr<MemoryBank> OpenExisting(const std::string& dir, Logger* logger) {
  MemoryBankOptions o;
  o.path = dir;
  o.create_if_missing = false;
  o.logger = logger;
  auto bank = MemoryBank::Open(o);
  if (!bank.ok()) {
    std::fprintf(stderr, "muninn bank: %s\n", bank.status().ToString().c_str());
    return nullptr;
  }
  return std::move(bank).value();
}

struct BankArgs {
  std::string dir;
  bool json = false;
};

}  // namespace

void RegisterBankCommands(CLI::App& app, CommandContext& ctx) {
  auto* bank = app.add_subcommand("bank", "Inspect and maintain a memory bank");
  bank->require_subcommand(1);
  auto logger = std::make_shared<StderrLogger>(LogLevel::kWarning);

  auto stats_args = std::make_shared<BankArgs>();
  auto* stats = bank->add_subcommand("stats", "Chunks, documents, bytes and index state");
  stats->add_option("--bank", stats_args->dir, "Bank directory")->required();
  stats->add_flag("--json", stats_args->json, "Print JSON");
  stats->callback([&ctx, stats_args, logger] {
    auto b = OpenExisting(stats_args->dir, logger.get());
    if (!b) {
      ctx.exit_code = 1;
      return;
    }
    const BankStats s = b->Stats();
    if (stats_args->json) {
      std::printf("%s\n", StatsJson(s).dump(2).c_str());
    } else {
      PrintStats(s);
    }
    Status st = b->Close();
    if (!st.ok()) std::fprintf(stderr, "muninn bank stats: %s\n", st.ToString().c_str());
    ctx.exit_code = st.ok() ? 0 : 1;
  });

  auto verify_args = std::make_shared<BankArgs>();
  auto* verify = bank->add_subcommand(
      "verify", "Decode every record and check that RocksDB and the FAISS index agree; exit 0 "
                "only if all is well");
  verify->add_option("--bank", verify_args->dir, "Bank directory")->required();
  verify->add_flag("--json", verify_args->json, "Print JSON");
  verify->callback([&ctx, verify_args, logger] {
    auto b = OpenExisting(verify_args->dir, logger.get());
    if (!b) {
      ctx.exit_code = 1;
      return;
    }
    auto report = b->Verify();
    if (!report.ok()) {
      std::fprintf(stderr, "muninn bank verify: %s\n", report.status().ToString().c_str());
      ctx.exit_code = 1;
      return;
    }
    const BankStats s = b->Stats();
    if (verify_args->json) {
      nlohmann::json j = {{"ok", report->ok()},
                          {"records_checked", report->records_checked},
                          {"problems", report->problems},
                          {"messages", report->messages},
                          {"index_recovery", s.index_recovery}};
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      for (const std::string& m : report->messages) std::printf("problem: %s\n", m.c_str());
      std::printf("%s: %lld records checked, %lld problems (index on open: %s)\n",
                  report->ok() ? "OK" : "FAILED", static_cast<long long>(report->records_checked),
                  static_cast<long long>(report->problems), s.index_recovery.c_str());
    }
    Status st = b->Close();
    ctx.exit_code = report->ok() && st.ok() ? 0 : 1;
  });

  auto docs_args = std::make_shared<BankArgs>();
  auto* docs = bank->add_subcommand(
      "documents", "List the documents: id, name (\"NAME (partial)\" when an ingest did not "
                   "finish), tokens, chunks");
  docs->add_option("--bank", docs_args->dir, "Bank directory")->required();
  docs->add_flag("--json", docs_args->json, "Print JSON");
  docs->callback([&ctx, docs_args, logger] {
    auto b = OpenExisting(docs_args->dir, logger.get());
    if (!b) {
      ctx.exit_code = 1;
      return;
    }
    if (Status m = MigrateLegacyCatalog(docs_args->dir, b.get()); !m.ok()) {
      std::fprintf(stderr, "muninn bank documents: %s\n", m.ToString().c_str());
      ctx.exit_code = 1;
      return;
    }
    nlohmann::json arr = nlohmann::json::array();
    for (const memory::DocumentRecord& r : b->ListDocuments()) {
      const bool partial = r.state == memory::DocumentState::kPartial;
      if (docs_args->json) {
        arr.push_back({{"id", r.id}, {"name", DisplayName(r)}, {"tokens", r.tokens},
                       {"chunks", r.n_chunks}, {"partial", partial}});
      } else {
        std::printf("%llu\t%s\t%lld tokens\t%lld chunks\n", static_cast<unsigned long long>(r.id),
                    DisplayName(r).c_str(), static_cast<long long>(r.tokens),
                    static_cast<long long>(r.n_chunks));
      }
    }
    if (docs_args->json) std::printf("%s\n", arr.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    Status st = b->Close();
    ctx.exit_code = st.ok() ? 0 : 1;
  });

  auto delete_args = std::make_shared<BankArgs>();
  auto delete_doc = std::make_shared<uint64_t>(0);
  auto* del = bank->add_subcommand("delete", "Delete a document (its chunks and its record)");
  del->add_option("--bank", delete_args->dir, "Bank directory")->required();
  del->add_option("--doc", *delete_doc, "Document id (see `muninn bank documents`)")->required();
  del->callback([&ctx, delete_args, delete_doc, logger] {
    auto b = OpenExisting(delete_args->dir, logger.get());
    if (!b) {
      ctx.exit_code = 1;
      return;
    }
    Status st = MigrateLegacyCatalog(delete_args->dir, b.get());
    std::string name;
    if (st.ok()) {
      auto doc = b->GetDocument(*delete_doc);
      st = doc.status();
      if (st.ok()) name = DisplayName(*doc);
    }
    int64_t removed = 0;
    if (st.ok()) {
      auto n = b->DeleteDocument(*delete_doc);
      st = n.status();
      if (n.ok()) removed = *n;
    }
    if (st.ok()) st = b->Close();
    if (!st.ok()) {
      std::fprintf(stderr, "muninn bank delete: %s\n", st.ToString().c_str());
      ctx.exit_code = st.code() == StatusCode::kNotFound ? 2 : 1;
      return;
    }
    std::printf("deleted document %llu (%s): %lld chunks\n",
                static_cast<unsigned long long>(*delete_doc), name.c_str(),
                static_cast<long long>(removed));
    ctx.exit_code = 0;
  });

  auto repair_args = std::make_shared<BankArgs>();
  auto repair_backup = std::make_shared<std::string>();
  auto* repair = bank->add_subcommand(
      "repair", "Salvage a damaged bank (RocksDB repair), after copying the directory to a backup; "
                "then verify it");
  repair->add_option("--bank", repair_args->dir, "Bank directory")->required();
  repair->add_option("--backup", *repair_backup,
                     "Where to copy the bank first (default DIR.backup-YYYYMMDDTHHMMSSZ); must not "
                     "exist");
  repair->callback([&ctx, repair_args, repair_backup, logger] {
    namespace fs = std::filesystem;
    const std::string dir = repair_args->dir;
    auto fail = [&](const std::string& msg) {
      std::fprintf(stderr, "muninn bank repair: %s\n", msg.c_str());
      ctx.exit_code = 1;
    };
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return fail("no bank directory " + dir);
    std::string backup = *repair_backup;
    if (backup.empty()) {
      const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
      std::tm tm{};
      gmtime_r(&now, &tm);
      char stamp[32];
      std::strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
      backup = fs::path(dir).lexically_normal().string();
      if (!backup.empty() && backup.back() == '/') backup.pop_back();
      backup += std::string(".backup-") + stamp;
    }
    if (fs::exists(backup, ec)) return fail("the backup path " + backup + " exists already");
    fs::copy(dir, backup, fs::copy_options::recursive, ec);
    if (ec) return fail("backing up " + dir + " to " + backup + ": " + ec.message() + "; nothing was repaired");
    std::printf("backed up %s to %s\n", dir.c_str(), backup.c_str());
    if (Status st = MemoryBank::Repair(dir); !st.ok()) return fail(st.ToString());
    auto b = OpenExisting(dir, logger.get());
    if (!b) return fail("the repaired bank does not open; the original is in " + backup);
    auto report = b->Verify();
    if (!report.ok()) return fail(report.status().ToString());
    for (const std::string& m : report->messages) std::printf("problem: %s\n", m.c_str());
    std::printf("repaired %s: %lld records checked, %lld problems%s\n", dir.c_str(),
                static_cast<long long>(report->records_checked),
                static_cast<long long>(report->problems),
                report->ok() ? "" : " (delete the affected documents with `muninn bank delete`)");
    Status st = b->Close();
    ctx.exit_code = st.ok() && report->ok() ? 0 : 1;
  });

  auto compact_args = std::make_shared<BankArgs>();
  auto* compact = bank->add_subcommand(
      "compact", "Write counters, rebuild the index when it holds deleted vectors, compact RocksDB");
  compact->add_option("--bank", compact_args->dir, "Bank directory")->required();
  compact->callback([&ctx, compact_args, logger] {
    auto b = OpenExisting(compact_args->dir, logger.get());
    if (!b) {
      ctx.exit_code = 1;
      return;
    }
    Status st = b->Compact();
    if (st.ok()) st = b->Close();
    if (!st.ok()) {
      std::fprintf(stderr, "muninn bank compact: %s\n", st.ToString().c_str());
      ctx.exit_code = 1;
      return;
    }
    std::printf("compacted %s\n", compact_args->dir.c_str());
    ctx.exit_code = 0;
  });
}

}  // namespace muninn::tools
