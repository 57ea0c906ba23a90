#include "app_config.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "muninn/model/kv_cache.h"

namespace muninn::tools {
namespace fs = std::filesystem;

namespace {

std::string Absolute(const std::string& root, const std::string& p) {
  if (p.empty() || p == "hidden" || fs::path(p).is_absolute()) return p;
  return (fs::path(root) / p).lexically_normal().string();
}

}  // namespace

std::optional<std::string> FindAboveExeOrCwd(const std::string& relative) {
  std::error_code ec;
  std::vector<fs::path> starts;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) starts.push_back(exe.parent_path());
  starts.push_back(fs::current_path(ec));
  for (fs::path p : starts) {
    for (int depth = 0; depth < 8 && !p.empty(); ++depth) {
      if (fs::exists(p / relative, ec)) return (p / relative).string();
      if (p == p.parent_path()) break;
      p = p.parent_path();
    }
  }
  return std::nullopt;
}

std::string RepoRoot() {
  if (const char* home = std::getenv("MUNINN_HOME"); home != nullptr && *home != '\0') return home;
  if (auto cfg = FindAboveExeOrCwd("configs/smollm2-135m.json")) {
    return fs::path(*cfg).parent_path().parent_path().string();
  }
  std::error_code ec;
  return fs::current_path(ec).string();
}

StatusOr<std::string> ReadFileBounded(const std::string& path, int64_t max_bytes) {
  if (max_bytes < 0) return InvalidArgumentError("the input limit must be >= 0 bytes");
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    return InvalidArgumentError("'" + path + "' is a directory; pass the files in it instead");
  }
  auto too_big = [&] {
    return ResourceExhaustedError("'" + path + "' holds more than " + std::to_string(max_bytes) +
                                  " bytes; raise the limit with --max-input-bytes N if that is "
                                  "intended");
  };
  // A regular file's size is known up front: refuse before reading a byte.
  if (fs::is_regular_file(path, ec)) {
    const uintmax_t size = fs::file_size(path, ec);
    if (!ec && size > static_cast<uintmax_t>(max_bytes)) return too_big();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot read '" + path + "'");
  // Devices and pipes have no size: read in pieces and stop one byte past the limit.
  std::string out;
  constexpr size_t kPiece = size_t{1} << 20;
  const auto limit = static_cast<uint64_t>(max_bytes);
  while (in) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(kPiece, limit + 1 - out.size()));
    const size_t old = out.size();
    out.resize(old + want);
    in.read(out.data() + old, static_cast<std::streamsize>(want));
    out.resize(old + static_cast<size_t>(in.gcount()));
    if (out.size() > limit) return too_big();
  }
  if (in.bad()) return IoError("error while reading '" + path + "'");
  return out;
}

StatusOr<std::string> ReadFile(const std::string& path) {
  return ReadFileBounded(path, kDefaultMaxInputBytes);
}

std::string DefaultConfigPath() { return (fs::path(RepoRoot()) / "configs" / "smollm2-135m.json").string(); }

StatusOr<AppConfig> LoadAppConfig(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return text.status().WithContext("reading config");
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgumentError("config '" + path + "' is not a JSON object");
  }
  const std::string root = RepoRoot();
  AppConfig c;
  auto err = [&](const std::string& key, const std::string& what) {
    return InvalidArgumentError("config '" + path + "': '" + key + "' " + what);
  };
  auto get_string = [&](const nlohmann::json& o, const char* key, std::string* out) -> Status {
    if (!o.contains(key)) return Status::Ok();
    if (!o[key].is_string()) return err(key, "must be a string");
    *out = o[key].get<std::string>();
    return Status::Ok();
  };
  auto get_int = [&](const nlohmann::json& o, const char* key, auto* out) -> Status {
    if (!o.contains(key)) return Status::Ok();
    if (!o[key].is_number_integer()) return err(key, "must be an integer");
    *out = o[key].get<int64_t>();
    return Status::Ok();
  };
  RETURN_IF_ERROR(get_string(j, "model", &c.model_path));
  RETURN_IF_ERROR(get_string(j, "embedder", &c.embedder));
  if (c.model_path.empty()) return err("model", "is required");
  if (c.embedder.empty()) c.embedder = "hidden";
  // Relative paths are relative to the repository root (found above the executable or the
  // working directory). When nothing is there — e.g. a build directory outside the repository —
  // and the config sits in a `configs/` folder, the folder above that is the root it belongs to.
  const fs::path config_dir = fs::path(path).parent_path();
  const bool in_configs = config_dir.filename() == "configs";
  auto resolve = [&](const std::string& p) {
    const std::string at_root = Absolute(root, p);
    if (!in_configs || at_root == p || fs::exists(at_root)) return at_root;
    std::error_code ec;
    const fs::path dir = fs::absolute(config_dir, ec);
    if (ec) return at_root;
    const std::string beside = Absolute(dir.parent_path().string(), p);
    return fs::exists(beside) ? beside : at_root;
  };
  c.model_path = resolve(c.model_path);
  c.embedder = resolve(c.embedder);
  if (j.contains("lora")) {
    const auto& l = j["lora"];
    if (l.is_string()) {
      c.lora = ParseLoraSpec(l.get<std::string>());
    } else if (l.is_object()) {
      RETURN_IF_ERROR(get_string(l, "path", &c.lora.path));
      if (l.contains("scale")) {
        if (!l["scale"].is_number()) return err("lora.scale", "must be a number");
        c.lora.scale = l["scale"].get<float>();
      }
      for (const auto& [key, value] : l.items()) {
        if (key != "path" && key != "scale")
          return err("lora." + key, "is not a known key (path, scale)");
      }
    } else {
      return err("lora", "must be \"PATH[:SCALE]\" or {\"path\": PATH, \"scale\": SCALE}");
    }
    if (c.lora.path.empty()) return err("lora", "needs a path (a PEFT LoRA folder)");
    if (!std::isfinite(c.lora.scale)) return err("lora.scale", "must be finite");
    c.lora.path = resolve(c.lora.path);
  }

  if (j.contains("long_context")) {
    const auto& lc = j["long_context"];
    if (!lc.is_object()) return err("long_context", "must be an object");
    auto& o = c.long_context;
    int64_t m = o.memory_layer;
    RETURN_IF_ERROR(get_int(lc, "memory_layer", &m));
    o.memory_layer = static_cast<int32_t>(m);
    if (lc.contains("retrieval_layers")) {
      if (!lc["retrieval_layers"].is_array()) return err("retrieval_layers", "must be an array");
      o.retrieval_layers.clear();
      for (const auto& v : lc["retrieval_layers"]) {
        if (!v.is_number_integer()) return err("retrieval_layers", "must hold integers");
        o.retrieval_layers.push_back(v.get<int32_t>());
      }
    }
    RETURN_IF_ERROR(get_int(lc, "chunk_tokens", &o.chunk_tokens));
    RETURN_IF_ERROR(get_int(lc, "top_k", &o.top_k));
    RETURN_IF_ERROR(get_int(lc, "local_window", &o.local_window));
    if (lc.contains("kv_cache")) {
      std::string kv;
      RETURN_IF_ERROR(get_string(lc, "kv_cache", &kv));
      auto d = DTypeFromName(kv);
      if (!d || !model::IsKvCacheDType(*d)) {
        return err("kv_cache", "must be f16, f32 or q8_0");
      }
      o.kv_cache_dtype = *d;
    }
    std::string pos = "zero";
    RETURN_IF_ERROR(get_string(lc, "memory_position", &pos));
    if (!retriever::ParseMemoryPosition(pos, &o.memory_position)) {
      return err("memory_position", "must be \"zero\" or \"before_window\"");
    }
    if (lc.contains("modes")) {
      if (!lc["modes"].is_string()) return err("modes", "must be a string such as \"reread\"");
      RETURN_IF_ERROR(retriever::ParseMemoryModes(lc["modes"].get<std::string>(), &o.modes)
                          .WithContext("config '" + path + "': 'modes'"));
    }
    if (lc.contains("context")) {
      const auto& cm = lc["context"];
      if (!cm.is_object()) return err("context", "must be an object");
      if (cm.contains("layers")) {
        if (cm["layers"].is_string() && cm["layers"].get<std::string>() == "all") {
          o.context.layers.clear();
        } else if (cm["layers"].is_array()) {
          o.context.layers.clear();
          for (const auto& v : cm["layers"]) {
            if (!v.is_number_integer()) return err("context.layers", "must hold integers");
            o.context.layers.push_back(v.get<int32_t>());
          }
        } else {
          return err("context.layers", "must be \"all\" or an array of layer indices");
        }
      }
      RETURN_IF_ERROR(get_int(cm, "sink_tokens", &o.context.sink_tokens));
      RETURN_IF_ERROR(get_int(cm, "representative_keys", &o.context.representative_keys));
      RETURN_IF_ERROR(get_int(cm, "top_k", &o.context.top_k));
      std::string cp = retriever::ContextPositionName(o.context.position);
      RETURN_IF_ERROR(get_string(cm, "position", &cp));
      if (!retriever::ParseContextPosition(cp, &o.context.position)) {
        return err("context.position", "must be \"constant\", \"contiguous\" or \"zero\"");
      }
      if (cm.contains("contextual_ingest")) {
        if (!cm["contextual_ingest"].is_boolean()) return err("context.contextual_ingest", "must be true or false");
        o.context.contextual_ingest = cm["contextual_ingest"].get<bool>();
      }
      std::string sel = retriever::ChunkSelectionName(o.context.selection);
      RETURN_IF_ERROR(get_string(cm, "selection", &sel));
      if (!retriever::ParseChunkSelection(sel, &o.context.selection)) {
        return err("context.selection", "must be \"embedder\" or \"representative_keys\"");
      }
    }
    if (lc.contains("reread")) {
      const auto& rr = lc["reread"];
      if (!rr.is_object()) return err("reread", "must be an object");
      RETURN_IF_ERROR(get_int(rr, "top_k", &o.reread.top_k));
      RETURN_IF_ERROR(get_int(rr, "budget_tokens", &o.reread.budget_tokens));
      if (rr.contains("retrieval")) {
        std::string method;
        RETURN_IF_ERROR(get_string(rr, "retrieval", &method));
        StatusOr<retriever::RetrievalMethod> rm = retriever::ParseRetrievalMethod(method);
        if (!rm.ok()) return err("reread.retrieval", "must be \"dense\", \"lexical\" or \"hybrid\"");
        o.reread.retrieval = *rm;
      }
      RETURN_IF_ERROR(get_int(rr, "focus", &o.reread.focus));
      if (rr.contains("focus_margin")) {
        if (!rr["focus_margin"].is_number()) return err("reread.focus_margin", "must be a number");
        o.reread.focus_margin = rr["focus_margin"].get<float>();
      }
      if (rr.contains("placement")) {
        std::string placement;
        RETURN_IF_ERROR(get_string(rr, "placement", &placement));
        if (!retriever::ParseExcerptPlacement(placement, &o.reread.placement)) {
          return err("reread.placement", "must be \"start\" or \"before_last_line\"");
        }
      }
    }
    if (lc.contains("knn")) {
      const auto& kn = lc["knn"];
      if (!kn.is_object()) return err("knn", "must be an object");
      RETURN_IF_ERROR(get_int(kn, "k", &o.knn.k));
      RETURN_IF_ERROR(get_int(kn, "chunks", &o.knn.chunks));
      RETURN_IF_ERROR(get_int(kn, "context_tokens", &o.knn.context_tokens));
      for (const char* key : {"lambda", "temperature"}) {
        if (!kn.contains(key)) continue;
        if (!kn[key].is_number()) return err(std::string("knn.") + key, "must be a number");
        (std::string(key) == "lambda" ? o.knn.lambda : o.knn.temperature) = kn[key].get<float>();
      }
    }
  }
  if (j.contains("bank")) {
    const auto& b = j["bank"];
    if (!b.is_object()) return err("bank", "must be an object");
    std::string dt = "bf16";
    RETURN_IF_ERROR(get_string(b, "kv_dtype", &dt));
    auto d = DTypeFromName(dt);
    if (!d || (*d != DType::kBF16 && *d != DType::kF16 && *d != DType::kQ8_0)) {
      return err("kv_dtype", "must be bf16, f16 or q8_0");
    }
    c.bank_kv_dtype = *d;
    RETURN_IF_ERROR(get_string(b, "index", &c.bank_index));
    RETURN_IF_ERROR(get_int(b, "capacity_tokens", &c.bank_capacity_tokens));
    std::string ev = "frequency";
    RETURN_IF_ERROR(get_string(b, "eviction", &ev));
    if (!memory::ParseEvictionPolicy(ev, &c.bank_eviction)) return err("eviction", "is not a known policy");
  }
  if (j.contains("summarize")) {
    const auto& s = j["summarize"];
    if (!s.is_object()) return err("summarize", "must be an object");
    auto& o = c.summarize;
    RETURN_IF_ERROR(get_int(s, "section_tokens", &o.section_tokens));
    RETURN_IF_ERROR(get_int(s, "min_sections", &o.min_sections));
    RETURN_IF_ERROR(get_int(s, "sentences_per_section", &o.sentences_per_section));
    RETURN_IF_ERROR(get_int(s, "merge_fanout", &o.merge_fanout));
    RETURN_IF_ERROR(get_int(s, "merge_keep", &o.merge_keep));
    RETURN_IF_ERROR(get_int(s, "brief_sentences", &o.brief_sentences));
    RETURN_IF_ERROR(get_int(s, "max_tokens", &o.max_tokens));
    RETURN_IF_ERROR(get_int(s, "max_sentence_words", &o.max_sentence_words));
    RETURN_IF_ERROR(get_int(s, "condense_tokens", &o.condense_tokens));
    if (s.contains("condense")) {
      if (!s["condense"].is_boolean()) return err("condense", "must be true or false");
      o.condense = s["condense"].get<bool>();
    }
  }
  RETURN_IF_ERROR(c.summarize.Validate().WithContext("config '" + path + "'"));
  return c;
}

}  // namespace muninn::tools
