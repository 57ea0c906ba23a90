#include "runtime.h"

#include <filesystem>
#include <set>

#include "device_backend.h"
#include "document_catalog.h"
#include "muninn/core/cpu_backend.h"
#include "muninn/model/bert_encoder.h"
#include "muninn/retriever/bert_embedder.h"
#include "muninn/retriever/hidden_state_embedder.h"

namespace muninn::tools {

void AddRuntimeFlags(CLI::App* cmd, RuntimeFlags* f) {
  cmd->add_option("--config", f->config, "Per-model configuration (default configs/smollm2-135m.json)");
  cmd->add_option("-m,--model", f->model, "Model: GGUF file or Hugging Face folder (default from the config)");
  cmd->add_option("--embedder", f->embedder,
                  "Retrieval embedder: a sentence-encoder folder, or 'hidden' for the model's own "
                  "memory-layer hidden states (default from the config)");
  cmd->add_option("--lora", f->lora,
                  "PEFT LoRA folder merged into the model at load, optionally :SCALE (default 1; "
                  "overrides the config's \"lora\"; 'none': no adapter); ingest and queries "
                  "both use the adapted model");
  cmd->add_option("--bank", f->bank, "Memory bank directory (default: a bank in RAM for this run)");
  cmd->add_option("-t,--threads", f->threads, "Threads (default: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--no-memory", f->no_memory, "Plain sliding window: no memory at all");
  cmd->add_option("--memory-mode", f->memory_mode,
                  "How retrieved chunks reach the model: reread (their text in the prompt), "
                  "context (each layer's own K/V), knn (kNN-LM), memlong, none; several joined "
                  "by ',' (default from the config)");
  cmd->add_option("--retrieval", f->retrieval,
                  "How re-read chunks are found: dense (the embedder), lexical (BM25 over the "
                  "words) or hybrid (both in turn; default from the config)")
      ->check(CLI::IsMember({"dense", "lexical", "hybrid"}));
}

void AddDeviceFlag(CLI::App* cmd, RuntimeFlags* f) {
  cmd->add_option("--device", f->device, kDeviceHelp)->capture_default_str();
  cmd->add_option("--gpu-layers,--ngl", f->gpu_layers, kGpuLayersHelp)->capture_default_str();
}

memory::MemoryBankOptions Runtime::NewBankOptions(const retriever::LongContextOptions& lc) const {
  memory::MemoryBankOptions bo;
  const auto& mc = loaded_.model->config();
  bo.dim = embedder_->dim();
  bo.kv_layers = lc.KvLayers(mc);
  if (!bo.kv_layers.empty()) {
    bo.n_head_kv = mc.n_head_kv;
    bo.head_dim = mc.head_dim;
  }
  bo.state_dim = lc.StateDim(mc);
  bo.kv_dtype = config_.bank_kv_dtype;
  bo.index_factory = config_.bank_index;
  bo.capacity_tokens = config_.bank_capacity_tokens;
  bo.eviction = config_.bank_eviction;
  return bo;
}

StatusOr<std::unique_ptr<memory::MemoryBank>> Runtime::NewMemoryBank(
    const retriever::LongContextOptions& options) const {
  memory::MemoryBankOptions bo = NewBankOptions(options);
  bo.in_memory = true;
  return memory::MemoryBank::Open(bo);
}

Runtime::~Runtime() {
  session_.reset();
  if (bank_) bank_->Close().IgnoreError();
}

StatusOr<std::unique_ptr<memory::MemoryBank>> Runtime::OpenBank(bool create) const {
  memory::MemoryBankOptions bo = NewBankOptions(config_.long_context);
  bo.in_memory = flags_.bank.empty();
  bo.path = flags_.bank;
  bo.create_if_missing = create;
  if (!bo.in_memory && std::filesystem::exists(bo.path)) {
    // Take the stored bank's layout; the session checks that it serves the memory modes.
    bo.kv_layers.clear();
    bo.n_head_kv = 0;
    bo.head_dim = 0;
    bo.state_dim = 0;
    bo.kv_dtype = DType::kCount;
    bo.index_factory.clear();
  }
  if (!create && !bo.in_memory && !std::filesystem::exists(bo.path)) {
    return NotFoundError("no memory bank at '" + bo.path + "'; create one with `muninn ingest FILE --bank " +
                         bo.path + "`");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<memory::MemoryBank> bank, memory::MemoryBank::Open(bo));
  if (!bo.in_memory) RETURN_IF_ERROR(MigrateLegacyCatalog(bo.path, bank.get()));
  return bank;
}

StatusOr<std::unique_ptr<Runtime>> Runtime::Open(const RuntimeFlags& flags) {
  auto rt = std::unique_ptr<Runtime>(new Runtime());
  rt->flags_ = flags;
  const std::string config_path = flags.config.empty() ? DefaultConfigPath() : flags.config;
  ASSIGN_OR_RETURN(rt->config_, LoadAppConfig(config_path));
  if (!flags.model.empty()) rt->config_.model_path = flags.model;
  if (!flags.embedder.empty()) rt->config_.embedder = flags.embedder;
  if (flags.lora == "none") {
    rt->config_.lora = LoraSpec{};
  } else if (!flags.lora.empty()) {
    rt->config_.lora = ParseLoraSpec(flags.lora);
  }
  const bool on_device = !flags.device.empty() && flags.device != "cpu";
  if (flags.no_memory) rt->config_.long_context.use_memory = false;
  if (!flags.memory_mode.empty()) {
    RETURN_IF_ERROR(retriever::ParseMemoryModes(flags.memory_mode, &rt->config_.long_context.modes)
                        .WithContext("--memory-mode"));
  }
  if (!flags.retrieval.empty()) {
    ASSIGN_OR_RETURN(rt->config_.long_context.reread.retrieval,
                     retriever::ParseRetrievalMethod(flags.retrieval));
  }
  rt->pool_ = std::make_unique<ThreadPool>(flags.threads);
  CpuBackendOptions cpu;
  cpu.pool = rt->pool_.get();
  // The device first: without one, --device fails at once (UNAVAILABLE), before any loading.
  ASSIGN_OR_RETURN(rt->backend_, CreateBackendForDevice(on_device ? flags.device : "cpu", cpu));
  if (!std::filesystem::exists(rt->config_.model_path)) {
    return NotFoundError("model '" + rt->config_.model_path +
                         "' not found; run scripts/setup.sh to fetch the default model, or pass -m");
  }
  // The adapter is merged at load, on the host, before anything holds the model (hidden-state
  // embedder, session): ingest writes K/V from the same adapted weights that later read them.
  model::LoadModelOptions load;
  load.on_host = LoraOnHost(rt->config_.lora);
  load.gpu_layers = flags.gpu_layers;  // refused without a device
  if (on_device) {  // the host layers of a partial offload, and the sentence encoder
    ASSIGN_OR_RETURN(rt->cpu_backend_, CreateCpuBackend(cpu));
    load.host = rt->cpu_backend_.get();
  }
  ASSIGN_OR_RETURN(rt->loaded_,
                   model::LoadModel(rt->config_.model_path, rt->backend_.get(), load));
  if (rt->loaded_.tokenizer == nullptr) {
    return InvalidArgumentError("model '" + rt->config_.model_path + "' carries no tokenizer");
  }
  auto chat = model::ChatTemplate::FromJinja(rt->loaded_.chat_template);
  rt->chat_ = chat.ok() ? *chat : model::ChatTemplate::Plain();

  const auto& mc = rt->loaded_.model->config();
  auto& lc = rt->config_.long_context;
  if (lc.memory_layer >= mc.n_layer) {
    return InvalidArgumentError("the config's memory_layer " + std::to_string(lc.memory_layer) +
                                " does not exist in a " + std::to_string(mc.n_layer) +
                                "-layer model; pass a --config made for this model");
  }
  if (rt->config_.embedder == "hidden") {
    ASSIGN_OR_RETURN(rt->embedder_, retriever::HiddenStateEmbedder::Create(rt->loaded_.model.get(),
                                                                          lc.memory_layer));
  } else {
    model::BertEncoderOptions bo;
    bo.backend = rt->backend_.get();
    if (on_device) bo.backend = rt->cpu_backend_.get();  // the encoder reads host weights
    auto enc = model::BertEncoder::Load(rt->config_.embedder, bo);
    if (!enc.ok()) {
      return enc.status().WithContext("loading the embedder '" + rt->config_.embedder +
                                      "' (run scripts/setup.sh, or pass --embedder hidden)");
    }
    rt->embedder_ = std::make_unique<retriever::BertEmbedder>(std::move(*enc));
  }
  if (lc.use_memory || !flags.bank.empty()) {
    ASSIGN_OR_RETURN(rt->bank_, rt->OpenBank(flags.create_bank));
  }
  ASSIGN_OR_RETURN(rt->session_, retriever::LongContextSession::Create(
                                     rt->loaded_.model.get(), rt->loaded_.tokenizer.get(),
                                     rt->bank_.get(), rt->embedder_.get(), lc));
  return rt;
}

StatusOr<std::unique_ptr<retriever::LongContextSession>> Runtime::NewSession(
    const retriever::LongContextOptions& options) {
  return NewSession(options, bank_.get());
}

StatusOr<std::unique_ptr<retriever::LongContextSession>> Runtime::NewSession(
    const retriever::LongContextOptions& options, memory::MemoryBank* bank,
    retriever::Embedder* embedder) {
  return retriever::LongContextSession::Create(loaded_.model.get(), loaded_.tokenizer.get(), bank,
                                               embedder != nullptr ? embedder : embedder_.get(),
                                               options);
}

Status Runtime::ResetBank() {
  if (!flags_.bank.empty()) return FailedPreconditionError("only an in-RAM bank can be reset");
  return EmptyBank(bank_.get());
}

Status EmptyBank(memory::MemoryBank* bank) {
  if (bank == nullptr) return Status::Ok();
  std::set<memory::DocumentId> docs;
  for (const auto& info : bank->ListChunks()) docs.insert(info.doc_id);
  for (memory::DocumentId d : docs) RETURN_IF_ERROR(bank->DeleteDocument(d).status());
  return Status::Ok();
}

}  // namespace muninn::tools
