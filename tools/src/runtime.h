// Private to tools/: everything a long-context command needs, loaded from an AppConfig and flags:
// thread pool → backend (the CPU, or the device --device names) → model (+ tokenizer, chat
// template) → embedder → memory bank → session. Owns them all; members are declared in dependency
// order so they die in reverse. A sentence-encoder embedder always runs on a CPU backend.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "app_config.h"
#include "muninn/core/backend.h"
#include "muninn/core/thread_pool.h"
#include "muninn/memory/memory_bank.h"
#include "muninn/model/chat_template.h"
#include "muninn/model/model_loader.h"
#include "muninn/retriever/embedder.h"
#include "muninn/retriever/long_context_session.h"

namespace muninn::tools {

struct RuntimeFlags {
  std::string config;       // "" = DefaultConfigPath()
  std::string model;        // overrides the config's model
  std::string embedder;     // overrides the config's embedder ("hidden" or a folder)
  std::string lora;         // "PATH[:SCALE]" overrides the config's "lora"; "none" drops it
  std::string bank;         // "" = a bank in RAM, dropped at exit
  int threads = 0;          // 0 = all cores
  bool no_memory = false;   // plain sliding window
  std::string memory_mode;  // "" = the config's modes; else e.g. "reread", "context,knn"
  std::string retrieval;    // "" = the config's reread.retrieval; else dense|lexical|hybrid
  bool create_bank = true;  // false: the bank must exist (ask)
  std::string device = "cpu";  // the model's backend (device_backend.h: cpu, cuda, cuda:N)
  int gpu_layers = -1;          // with a device: layers on it (-1 all; partial offload)
};

// Registers the flags every long-context command shares.
void AddRuntimeFlags(CLI::App* cmd, RuntimeFlags* flags);
// Registers --device (kDeviceHelp) for the commands whose session runs on a device backend.
void AddDeviceFlag(CLI::App* cmd, RuntimeFlags* flags);

// Deletes every document of `bank` in place (sessions keep their pointer to it); null is a no-op.
Status EmptyBank(memory::MemoryBank* bank);

class Runtime {
 public:
  static StatusOr<std::unique_ptr<Runtime>> Open(const RuntimeFlags& flags);
  ~Runtime();

  const AppConfig& config() const { return config_; }
  model::Model& model() { return *loaded_.model; }
  const model::Tokenizer& tokenizer() { return *loaded_.tokenizer; }
  const model::ChatTemplate& chat() const { return *chat_; }
  memory::MemoryBank* bank() { return bank_.get(); }
  retriever::Embedder* embedder() { return embedder_.get(); }
  retriever::LongContextSession& session() { return *session_; }
  // A second session over the same model/bank with different options (e.g. memory off).
  StatusOr<std::unique_ptr<retriever::LongContextSession>> NewSession(
      const retriever::LongContextOptions& options);
  // A session over another bank (not owned; e.g. one made by NewMemoryBank for another mode),
  // optionally with another embedder of the same dimension (not owned; null: the runtime's).
  StatusOr<std::unique_ptr<retriever::LongContextSession>> NewSession(
      const retriever::LongContextOptions& options, memory::MemoryBank* bank,
      retriever::Embedder* embedder = nullptr);
  // A fresh in-RAM bank laid out for `options`' memory modes (what evals comparing modes need).
  StatusOr<std::unique_ptr<memory::MemoryBank>> NewMemoryBank(
      const retriever::LongContextOptions& options) const;
  // Drops every chunk of the in-RAM bank (a fresh bank; only for banks without a path).
  Status ResetBank();

 private:
  Runtime() = default;
  StatusOr<std::unique_ptr<memory::MemoryBank>> OpenBank(bool create) const;
  // Bank options for a new bank serving `options`' modes.
  memory::MemoryBankOptions NewBankOptions(const retriever::LongContextOptions& options) const;

  AppConfig config_;
  RuntimeFlags flags_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Backend> backend_;      // the model's (the device's with --device)
  // The sentence encoder's when backend_ is a device's, and the host layers' with --gpu-layers.
  std::unique_ptr<Backend> cpu_backend_;
  model::LoadedModel loaded_;
  std::optional<model::ChatTemplate> chat_;
  std::unique_ptr<retriever::Embedder> embedder_;
  std::unique_ptr<memory::MemoryBank> bank_;
  std::unique_ptr<retriever::LongContextSession> session_;
};

}  // namespace muninn::tools
