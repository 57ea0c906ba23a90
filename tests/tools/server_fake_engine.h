// A deterministic in-memory Engine for the server tests: no model, no bank.
//
// Chat/Complete answer "echo: <last user message or prompt>" split into words (one piece per
// word, so streaming has several pieces), cut at max_tokens words ("length") or at a stop
// string ("stop"). Documents live in a map; a document of W words has ceil(W / 8) chunks. Ask
// returns one chunk per document containing a word of the question. Model calls go through a
// real ModelQueue, and `gate` can hold them inside the model so tests can fill the queue.
#pragma once

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "tools/src/server_engine.h"
#include "tools/src/server_queue.h"
#include "tools/src/server_request.h"

namespace muninn::tools::server::testing {

class FakeEngine : public Engine {
 public:
  explicit FakeEngine(int64_t max_waiting = 4) : queue_(max_waiting) {}

  // While closed, model calls block inside the model (holding the queue lease).
  void CloseGate() {
    std::lock_guard<std::mutex> l(mu_);
    gate_open_ = false;
  }
  void OpenGate() {
    {
      std::lock_guard<std::mutex> l(mu_);
      gate_open_ = true;
    }
    cv_.notify_all();
  }
  // Number of calls that entered the model so far.
  int entered() const {
    std::lock_guard<std::mutex> l(mu_);
    return entered_;
  }
  ModelQueue& queue() { return queue_; }
  // RequestStop was called.
  bool stop_requested() const {
    std::lock_guard<std::mutex> l(mu_);
    return stop_requested_;
  }
  // Calls held at the gate end with Unavailable, as a real ingest stops between two appends.
  void RequestStop() override {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_requested_ = true;
    }
    cv_.notify_all();
  }

  std::string model_id() const override { return "fake-model"; }
  std::string embedding_model_id() const override { return "fake-embedder"; }

  StatusOr<GenerationOutput> Chat(std::span<const model::ChatMessage> messages,
                                  const GenerationParams& params,
                                  const TextSink& on_text) override {
    std::string last;
    for (const auto& m : messages) {
      if (m.role == "user") last = m.content;
    }
    return Generate("echo: " + last, params, on_text);
  }
  StatusOr<GenerationOutput> Complete(std::string_view prompt, const GenerationParams& params,
                                      const TextSink& on_text) override {
    return Generate("echo: " + std::string(prompt), params, on_text);
  }
  StatusOr<AskOutput> Ask(std::string_view question, const GenerationParams& params,
                          bool include_chunk_text, const TextSink& on_text) override {
    AskOutput out;
    ASSIGN_OR_RETURN(out.generation, Generate("answer: " + std::string(question), params, on_text));
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [id, doc] : docs_) {
      for (const auto& w : Words(std::string(question))) {
        if (doc.text.find(w) != std::string::npos) {
          ChunkRef c{id * 100, id, doc.name, 0, 8, 0.5f, include_chunk_text ? doc.text : ""};
          out.chunks.push_back(c);
          break;
        }
      }
    }
    return out;
  }
  StatusOr<SummaryOutput> Summarize(std::string_view name, std::string_view text,
                                    std::optional<uint64_t> document_id, int64_t max_tokens,
                                    const TextSink& on_text) override {
    std::string body(text);
    uint64_t id = 0;
    if (document_id) {
      std::lock_guard<std::mutex> l(mu_);
      auto it = docs_.find(*document_id);
      if (it == docs_.end()) return NotFoundError("no document " + std::to_string(*document_id));
      body = it->second.text;
      id = *document_id;
    } else {
      ASSIGN_OR_RETURN(auto ing, Ingest(name, text));
      id = ing.id;
    }
    GenerationParams p;
    p.max_tokens = max_tokens;
    ASSIGN_OR_RETURN(auto g, Generate("summary: " + body, p, on_text));
    return SummaryOutput{g.text, id, static_cast<int64_t>(Words(body).size()), 1,
                         g.completion_tokens};
  }
  StatusOr<EmbeddingOutput> Embed(std::span<const std::string> texts) override {
    ASSIGN_OR_RETURN(auto lease, queue_.Acquire());
    EmbeddingOutput out;
    for (const auto& t : texts) {
      // A 4-d vector from the text's length, normalised.
      std::vector<float> v = {1.0f, static_cast<float>(t.size() % 7), 0.0f, 0.0f};
      float n = 0;
      for (float x : v) n += x * x;
      for (float& x : v) x /= std::sqrt(n);
      out.vectors.push_back(v);
      out.prompt_tokens += static_cast<int64_t>(Words(t).size());
    }
    return out;
  }
  StatusOr<IngestOutput> Ingest(std::string_view name, std::string_view text) override {
    ASSIGN_OR_RETURN(auto lease, queue_.Acquire());
    std::lock_guard<std::mutex> l(mu_);
    const uint64_t id = next_id_++;
    const int64_t words = static_cast<int64_t>(Words(std::string(text)).size());
    docs_[id] = {name.empty() ? "document-" + std::to_string(id) : std::string(name),
                 std::string(text), words, (words + 7) / 8};
    return IngestOutput{id, words, (words + 7) / 8};
  }
  StatusOr<std::vector<DocumentInfo>> ListDocuments() override {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<DocumentInfo> out;
    for (const auto& [id, d] : docs_) out.push_back({id, d.name, d.tokens, d.chunks});
    return out;
  }
  Status DeleteDocument(uint64_t id) override {
    std::lock_guard<std::mutex> l(mu_);
    if (docs_.erase(id) == 0) return NotFoundError("no document " + std::to_string(id));
    return Status::Ok();
  }
  EngineStats Stats() override {
    EngineStats s;
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [id, d] : docs_) {
      s.bank_chunks += d.chunks;
      s.bank_tokens += d.tokens;
    }
    s.bank_documents = static_cast<int64_t>(docs_.size());
    s.queue_waiting = queue_.waiting();
    s.queue_running = queue_.busy() ? 1 : 0;
    return s;
  }

  static std::vector<std::string> Words(const std::string& text) {
    std::istringstream in(text);
    std::vector<std::string> w;
    for (std::string s; in >> s;) w.push_back(s);
    return w;
  }

 private:
  struct Doc {
    std::string name;
    std::string text;
    int64_t tokens = 0;
    int64_t chunks = 0;
  };

  StatusOr<GenerationOutput> Generate(const std::string& full, const GenerationParams& params,
                                      const TextSink& on_text) {
    ASSIGN_OR_RETURN(auto lease, queue_.Acquire());
    {
      std::unique_lock<std::mutex> l(mu_);
      ++entered_;
      cv_.wait(l, [&] { return gate_open_ || stop_requested_; });
      if (stop_requested_) return UnavailableError("the server is shutting down");
    }
    GenerationOutput out;
    out.prompt_tokens = static_cast<int64_t>(Words(full).size());
    out.finish_reason = "stop";
    const auto words = Words(full);
    for (size_t i = 0; i < words.size(); ++i) {
      if (static_cast<int64_t>(i) >= params.max_tokens) {
        out.finish_reason = "length";
        break;
      }
      const std::string piece = (i ? " " : "") + words[i];
      bool stop = false;
      for (const auto& s : params.stop) stop |= words[i] == s;
      if (stop) break;
      out.text += piece;
      ++out.completion_tokens;
      if (on_text) on_text(piece);
    }
    return out;
  }

  ModelQueue queue_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool gate_open_ = true;
  bool stop_requested_ = false;
  int entered_ = 0;
  std::map<uint64_t, Doc> docs_;
  uint64_t next_id_ = 1;
};

// A StreamWriter that appends to a string.
class StringWriter : public StreamWriter {
 public:
  bool Write(std::string_view data) override {
    out += data;
    return true;
  }
  std::string out;
};

}  // namespace muninn::tools::server::testing
