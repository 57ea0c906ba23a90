// Private to tools/: the per-model configuration file (configs/*.json) and where things live.
// Only tools/ reads configs and the environment (DESIGN.md); it turns them into the options
// structs of the other modules.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "lora_spec.h"
#include "muninn/core/status.h"
#include "muninn/memory/memory_bank_options.h"
#include "muninn/retriever/long_context_session.h"
#include "muninn/tools/summarizer.h"

namespace muninn::tools {

struct AppConfig {
  std::string model_path;     // absolute
  // "lora": a PEFT LoRA folder merged into the model at load (path absolute; empty: none).
  // Either "PATH[:SCALE]" or {"path": PATH, "scale": SCALE}; `--lora` overrides it.
  LoraSpec lora;
  std::string embedder;       // absolute folder path, or "hidden" (the model's own hidden states)
  retriever::LongContextOptions long_context;
  DType bank_kv_dtype = DType::kBF16;
  std::string bank_index = "Flat";
  int64_t bank_capacity_tokens = 0;
  memory::EvictionPolicy bank_eviction = memory::EvictionPolicy::kFrequency;
  SummarizerOptions summarize;
};

// The repository root: $MUNINN_HOME, else the nearest ancestor of the executable or of the
// working directory that holds configs/ and models/ (or configs/ alone).
std::string RepoRoot();

// The nearest ancestor of the executable, then of the working directory, under which `relative`
// exists, joined with it; nullopt when there is none.
std::optional<std::string> FindAboveExeOrCwd(const std::string& relative);

// Default bound on what one command reads from one input file (`--max-input-bytes`).
inline constexpr int64_t kDefaultMaxInputBytes = int64_t{256} << 20;

// The whole file as bytes, at most `max_bytes` of them: NotFound when it cannot be opened,
// InvalidArgument for a directory, ResourceExhausted (naming --max-input-bytes) when the file or
// stream (/dev/zero, a pipe) holds more, IoError when reading fails. Never reads more than
// max_bytes + 1 bytes.
StatusOr<std::string> ReadFileBounded(const std::string& path, int64_t max_bytes);

// ReadFileBounded(path, kDefaultMaxInputBytes).
StatusOr<std::string> ReadFile(const std::string& path);

// configs/smollm2-135m.json under the repository root.
std::string DefaultConfigPath();

// Parses a config file; relative paths in it are taken from the repository root. Errors name the
// file and the key.
StatusOr<AppConfig> LoadAppConfig(const std::string& path);

}  // namespace muninn::tools
