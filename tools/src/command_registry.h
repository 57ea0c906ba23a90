// Private: one registration function per command family (tools/src/<family>_commands.cc).
#pragma once

#include "muninn/tools/commands.h"

namespace muninn::tools {

// `muninn system` — what this machine and build can do (CPU features, kernels, threads).
void RegisterSystemCommands(CLI::App& app, CommandContext& ctx);
// `muninn embed` — sentence embeddings from a BERT encoder folder (all-MiniLM-L6-v2 by default).
void RegisterEmbedCommands(CLI::App& app, CommandContext& ctx);
// `muninn bank stats|verify|compact` — inspect and maintain a memory bank.
void RegisterBankCommands(CLI::App& app, CommandContext& ctx);
// `muninn model info` — what a checkpoint holds (architecture, hyperparameters, tensors).
void RegisterModelCommands(CLI::App& app, CommandContext& ctx);
// `muninn ingest`, `ask` — the long-context pipelines.
void RegisterLongContextCommands(CLI::App& app, CommandContext& ctx);
// `muninn eval passkey|needle|perplexity` — long-context evaluations, memory modes side by side.
void RegisterEvalCommands(CLI::App& app, CommandContext& ctx);
// `muninn summarize`, `eval summary` — grounded summaries and their reference-free scores
// (registered after the eval family, whose `eval` it joins).
void RegisterSummarizeCommands(CLI::App& app, CommandContext& ctx);
// `muninn eval diagnose loss|attention|heads` — memory diagnostics (after RegisterEvalCommands,
// which creates `eval`).
void RegisterDiagnoseCommands(CLI::App& app, CommandContext& ctx);
// `muninn tokenize` — token ids and pieces of a text under a model's tokenizer.
void RegisterTokenizeCommands(CLI::App& app, CommandContext& ctx);
// `muninn serve` — the HTTP retrieval-augmented QA server (OpenAI-compatible API + documents);
// `muninn loadtest` — a loopback load client for it.
void RegisterServeCommands(CLI::App& app, CommandContext& ctx);
// `muninn generate`, `muninn logits` — text generation and last-position logits (llama models).
void RegisterGenerateCommands(CLI::App& app, CommandContext& ctx);
// `muninn bench` — llama-bench style ppN / tgN throughput.
void RegisterBenchCommands(CLI::App& app, CommandContext& ctx);
// `muninn train` — LoRA fine-tuning of the upper layers (PEFT adapter, resumable checkpoints);
// `muninn lora merge` — a GGUF with an adapter merged in.
void RegisterTrainCommands(CLI::App& app, CommandContext& ctx);

}  // namespace muninn::tools
