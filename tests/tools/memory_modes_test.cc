// Memory modes on the tiny stack: mode parsing, the text-only bank re-read mode uses, excerpts in
// document order within the budget, excerpts in chat prompts, the needle and perplexity evals'
// plumbing (the no-memory baselines included).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <unistd.h>

#include "muninn/tools/evals.h"
#include "muninn/tools/needle_eval.h"
#include "retriever/tiny_stack.h"
#include "tools/src/app_config.h"
#include "tools/src/caching_embedder.h"
#include "tools/src/chat_generation.h"

namespace muninn::tools {
namespace {

using muninn::testing::ByteTokenizer;
using muninn::testing::KeywordEmbedder;
using muninn::testing::TinyModel;

TEST(MemoryModesTest, ParseAndName) {
  uint32_t m = 0;
  ASSERT_TRUE(retriever::ParseMemoryModes("reread", &m).ok());
  EXPECT_EQ(m, retriever::kModeReread);
  ASSERT_TRUE(retriever::ParseMemoryModes("context+knn", &m).ok());
  EXPECT_EQ(m, retriever::kModeContext | retriever::kModeKnnLm);
  ASSERT_TRUE(retriever::ParseMemoryModes("memlong,reread", &m).ok());
  EXPECT_EQ(retriever::MemoryModesName(m), "memlong+reread");
  ASSERT_TRUE(retriever::ParseMemoryModes("none", &m).ok());
  EXPECT_EQ(m, 0u);
  EXPECT_EQ(retriever::MemoryModesName(0), "none");
  const Status bad = retriever::ParseMemoryModes("reread,telepathy", &m);
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("telepathy"), std::string_view::npos);
  EXPECT_FALSE(retriever::ParseMemoryModes("", &m).ok());
}

class RereadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = std::move(*CreateCpuBackend({}));
    model_ = TinyModel(backend_.get());
    tok_ = ByteTokenizer();
    opts_.modes = retriever::kModeReread;
    opts_.chunk_tokens = 16;
    opts_.local_window = 256;
    opts_.reread.top_k = 3;
    opts_.reread.budget_tokens = 32;
    // What Runtime::NewMemoryBank does for these modes: no K/V layers → a text-only bank.
    ASSERT_TRUE(opts_.KvLayers(model_->config()).empty());
    memory::MemoryBankOptions bo;
    bo.in_memory = true;
    bo.dim = embedder_.dim();
    bank_ = std::move(*memory::MemoryBank::Open(bo));
    auto s = retriever::LongContextSession::Create(model_.get(), tok_.get(), bank_.get(), &embedder_, opts_);
    ASSERT_TRUE(s.ok()) << s.status();
    session_ = std::move(*s);
  }
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<model::Tokenizer> tok_;
  std::unique_ptr<memory::MemoryBank> bank_;
  KeywordEmbedder embedder_;
  retriever::LongContextOptions opts_;
  std::unique_ptr<retriever::LongContextSession> session_;
};

TEST_F(RereadTest, IngestStoresTextOnlyAndExcerptsComeBackInDocumentOrder) {
  // Four 16-byte chunks; the keyword embedder makes "dddd" chunks the best match for "d".
  const std::string text = "dddd ddd dd d...aaaa aaa aa a...dddd xx yy zz...cccc ccc cc c...";
  ASSERT_EQ(text.size(), 64u);
  auto st = session_->IngestText(7, text);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->n_chunks, 4);
  EXPECT_EQ(bank_->Stats().kv_bytes, 0);
  auto ex = session_->RetrieveExcerpts("d");
  ASSERT_TRUE(ex.ok()) << ex.status();
  // top-3 by score, but the 32-token budget keeps the best two; shown in document order.
  ASSERT_EQ(ex->size(), 2u);
  EXPECT_EQ((*ex)[0].hit.position, 0);
  EXPECT_EQ((*ex)[1].hit.position, 32);
  EXPECT_EQ((*ex)[0].text, text.substr(0, 16));
  EXPECT_EQ((*ex)[1].tokens.size(), 16u);
  // The filter applies (nothing before position 0).
  memory::SearchFilter f;
  f.before_position = 0;
  EXPECT_TRUE(session_->RetrieveExcerpts("d", f)->empty());
  // Memory off: no excerpts.
  retriever::LongContextOptions off = opts_;
  off.use_memory = false;
  auto plain = retriever::LongContextSession::Create(model_.get(), tok_.get(), bank_.get(), &embedder_, off);
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE((*plain)->RetrieveExcerpts("d")->empty());
}

TEST_F(RereadTest, ChatTurnPutsExcerptsBeforeTheQuestion) {
  const std::string text = "dddd ddd dd d...aaaa aaa aa a...";
  ASSERT_TRUE(session_->IngestText(1, text).ok());
  const model::ChatMessage msg{"user", "what about d?"};
  ChatTurnOptions turn;
  turn.generate.max_tokens = 2;
  auto r = RunChatTurn(*session_, model::ChatTemplate::Plain(),
                       std::span<const model::ChatMessage>(&msg, 1), "d", turn);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_FALSE(r->hits.empty());
  EXPECT_EQ(r->hits[0].position, 0);  // the "dddd" chunk
  EXPECT_GT(r->excerpt_tokens, 16);
  // The window holds exactly the question with the excerpts before it.
  const std::string window = tok_->Decode(session_->window_tokens().subspan(0, r->prompt_tokens));
  const size_t at_excerpt = window.find("dddd ddd dd d...");
  const size_t at_question = window.find("what about d?");
  ASSERT_NE(at_excerpt, std::string::npos) << window;
  ASSERT_NE(at_question, std::string::npos) << window;
  EXPECT_LT(at_excerpt, at_question);
  const model::ChatMessage q{"user", "q?"};
  EXPECT_EQ(WithExcerpts({}, std::span<const model::ChatMessage>(&q, 1)).size(), 1u);
  // An existing system message keeps its text after the excerpts.
  const std::vector<model::ChatMessage> conv{{"system", "Be brief."}, {"user", "q?"}};
  retriever::Excerpt e;
  e.text = "some text";
  const auto with = WithExcerpts(std::span<const retriever::Excerpt>(&e, 1), conv);
  ASSERT_EQ(with.size(), 2u);
  EXPECT_EQ(with[0].content, "Answer the question using the text below.\n\n[1] some text\n\nBe brief.");
  EXPECT_EQ(with[1].content, "q?");
}

TEST_F(RereadTest, FocusCompletesASentenceCutByAChunkBoundaryAndDropsTheRest) {
  // Three 16-byte chunks; "b" retrieves only the middle one, whose sentence ends in the third.
  const std::string text = "cccc cccc cccc. Then bbbbbbbbbbb dog ran away.  ";
  ASSERT_EQ(text.size(), 48u);
  opts_.reread.top_k = 1;
  opts_.reread.focus = 0;
  opts_.reread.focus_margin = 0.2f;
  auto s = retriever::LongContextSession::Create(model_.get(), tok_.get(), bank_.get(), &embedder_, opts_);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE((*s)->IngestText(3, text).ok());
  auto ex = (*s)->RetrieveExcerpts("bbb?");
  ASSERT_TRUE(ex.ok()) << ex.status();
  ASSERT_EQ(ex->size(), 1u);
  EXPECT_EQ((*ex)[0].hit.position, 16);
  auto focused = (*s)->FocusExcerpts("bbb?", *ex);
  ASSERT_TRUE(focused.ok()) << focused.status();
  ASSERT_EQ(focused->size(), 1u);
  EXPECT_EQ((*focused)[0].text, "Then bbbbbbbbbbb dog ran away.");
  EXPECT_EQ((*focused)[0].hit.position, 0);    // the run starts at the chunk before
  EXPECT_EQ((*focused)[0].hit.n_tokens, 48);   // and spans all three
  // The chunks the answer read are the retrieved one only (HitsWithin).
  const auto hits = HitsWithin(*ex, *focused);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].position, 16);
  // focus -1: whole chunks, as retrieved.
  opts_.reread.focus = -1;
  auto whole = retriever::LongContextSession::Create(model_.get(), tok_.get(), bank_.get(), &embedder_, opts_);
  ASSERT_TRUE(whole.ok());
  auto same = (*whole)->FocusExcerpts("bbb?", *ex);
  ASSERT_TRUE(same.ok());
  ASSERT_EQ(same->size(), 1u);
  EXPECT_EQ((*same)[0].text, text.substr(16, 16));
}

TEST_F(RereadTest, FocusSettingsOutOfRangeAreRefused) {
  for (const auto& [focus, margin] : {std::pair<int64_t, float>{-2, 0.2f}, {65, 0.2f}, {0, -0.1f}, {0, 2.5f}}) {
    opts_.reread.focus = focus;
    opts_.reread.focus_margin = margin;
    auto s = retriever::LongContextSession::Create(model_.get(), tok_.get(), bank_.get(), &embedder_, opts_);
    ASSERT_FALSE(s.ok()) << focus << " " << margin;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find("focus"), std::string::npos) << s.status();
  }
}

TEST(FormatExcerptsTest, AdjacentChunksReadAsOneExcerpt) {
  auto ex = [](uint64_t doc, int64_t pos, const std::string& text) {
    retriever::Excerpt e;
    e.hit.doc_id = doc;
    e.hit.position = pos;
    e.hit.n_tokens = 16;
    e.text = text;
    return e;
  };
  const std::vector<retriever::Excerpt> v = {ex(1, 0, "The pass key is "), ex(1, 16, "28813. Remember it.\n"),
                                             ex(1, 64, " Far away.\n"), ex(2, 80, "Other doc.")};
  EXPECT_EQ(FormatExcerpts(v),
            "[1] The pass key is 28813. Remember it.\n\n[2] Far away.\n\n[3] Other doc.\n\n");
  EXPECT_EQ(FormatExcerpts({}), "");
}

TEST(FormatExcerptsTest, CompletionsGetTheExcerptsBeforeTheirLastLine) {
  retriever::Excerpt e;
  e.hit.doc_id = 1;
  e.hit.n_tokens = 4;
  e.text = "The pass key is 28813.";
  const std::span<const retriever::Excerpt> one(&e, 1);
  using retriever::ExcerptPlacement;
  const std::string doc = "Long text.\nMore text.\nWhat is the pass key? The pass key is";
  EXPECT_EQ(CompletionWithExcerpts(doc, one, ExcerptPlacement::kBeforeLastLine),
            "Long text.\nMore text.\n\nFrom earlier in the text:\n[1] The pass key is 28813.\n"
            "What is the pass key? The pass key is");
  EXPECT_EQ(CompletionWithExcerpts(doc, one, ExcerptPlacement::kStart),
            "[1] The pass key is 28813.\n\n" + doc);
  // One line, or a first line after blank lines only: before everything. No excerpts: unchanged.
  EXPECT_EQ(CompletionWithExcerpts("Q? A:", one, ExcerptPlacement::kBeforeLastLine),
            "[1] The pass key is 28813.\n\nQ? A:");
  EXPECT_EQ(CompletionWithExcerpts("\n\n  Q? A:", one, ExcerptPlacement::kBeforeLastLine),
            "[1] The pass key is 28813.\n\n\n\n  Q? A:");
  EXPECT_EQ(CompletionWithExcerpts(doc, {}, ExcerptPlacement::kBeforeLastLine), doc);
  // Trailing blank lines: the last non-empty line is the question.
  EXPECT_EQ(CompletionWithExcerpts("a\nb?\n\n", one, ExcerptPlacement::kBeforeLastLine),
            "a\n\nFrom earlier in the text:\n[1] The pass key is 28813.\nb?\n\n");
  EXPECT_EQ(LastLine("a\n  b? \n\n"), "b?");
  EXPECT_EQ(LastLine("single"), "single");
  EXPECT_EQ(LastLine(" \n "), "");
}

TEST(FormatExcerptsTest, HitsWithinKeepsTheChunksAJoinedExcerptCovers) {
  auto ex = [](uint64_t id, uint64_t doc, int64_t pos, int64_t n) {
    retriever::Excerpt e;
    e.hit.id = id;
    e.hit.doc_id = doc;
    e.hit.position = pos;
    e.hit.n_tokens = n;
    return e;
  };
  const std::vector<retriever::Excerpt> retrieved = {ex(1, 1, 0, 16), ex(2, 1, 16, 16), ex(3, 1, 64, 16),
                                                     ex(4, 2, 0, 16)};
  // Chunks 1 and 2 joined into one excerpt; chunk 3 dropped; chunk 4 kept.
  const std::vector<retriever::Excerpt> kept = {ex(1, 1, 0, 32), ex(4, 2, 0, 16)};
  std::vector<uint64_t> ids;
  for (const auto& h : HitsWithin(retrieved, kept)) ids.push_back(h.id);
  EXPECT_EQ(ids, (std::vector<uint64_t>{1, 2, 4}));
  EXPECT_TRUE(HitsWithin(retrieved, {}).empty());
}

TEST_F(RereadTest, ExcerptsThatDoNotFitTheWindowAreDropped) {
  opts_.local_window = 80;
  opts_.reread.budget_tokens = 64;
  opts_.reread.focus = -1;  // whole chunks: each one an excerpt that can be dropped
  auto s = retriever::LongContextSession::Create(model_.get(), tok_.get(), bank_.get(), &embedder_, opts_);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*s)->IngestText(1, "dddd ddd dd d...dddd ddd dd d...dddd ddd dd d...dddd ddd dd d...").ok());
  const model::ChatMessage msg{"user", "d? " + std::string(20, 'q')};
  ChatTurnOptions turn;
  turn.generate.max_tokens = 1;
  auto r = RunChatTurn(**s, model::ChatTemplate::Plain(), std::span<const model::ChatMessage>(&msg, 1),
                       "d", turn);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LE(r->prompt_tokens, 80 - 16);
  EXPECT_LT(r->hits.size(), 4u);
}

TEST(CachingEmbedderTest, SameVectorsFewerCalls) {
  KeywordEmbedder inner;
  CachingEmbedder cache(&inner, /*max_entries=*/3);
  const std::vector<retriever::EmbedRequest> reqs = {{"aab", {}}, {"cd", {}}, {"aab", {}}};
  auto direct = inner.Embed(reqs);
  const int calls = inner.calls;
  auto first = cache.Embed(reqs);
  auto second = cache.Embed(reqs);
  ASSERT_TRUE(direct.ok() && first.ok() && second.ok());
  EXPECT_EQ(*first, *direct);
  EXPECT_EQ(*second, *direct);
  EXPECT_EQ(inner.calls, calls + 1);  // the second call was served from the cache
  EXPECT_EQ(cache.hits(), 3);
  EXPECT_EQ(cache.misses(), 3);
  // Past max_entries the cache starts over; results stay the same.
  const std::vector<retriever::EmbedRequest> more = {{"a", {}}, {"b", {}}, {"c", {}}};
  ASSERT_TRUE(cache.Embed(more).ok());
  EXPECT_EQ(*cache.Embed(reqs), *direct);
}

TEST(HaystackTest, ProseStretchesAndDepths) {
  auto tok = ByteTokenizer();
  std::string prose;
  for (int i = 0; i < 400; ++i) prose += "Line " + std::to_string(i) + " of some prose.\n";
  const FillerText f{"prose", prose};
  auto a = HaystackText(*tok, f, 500, 1);
  auto b = HaystackText(*tok, f, 500, 2);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 500u);  // one byte per token
  EXPECT_NE(*a, *b);           // a seed-chosen starting line
  EXPECT_EQ(a->find("Line"), 0u);
  auto r = HaystackText(*tok, RepeatFiller(), 300, 5);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 300u);
  EXPECT_EQ(r->find("The grass is green."), 0u);
  for (double depth : {0.0, 0.3, 0.7, 1.0}) {
    const std::string doc = InsertAtDepth(*a, "NEEDLE\n", depth);
    const size_t at = doc.find("NEEDLE");
    ASSERT_NE(at, std::string::npos);
    EXPECT_NEAR(static_cast<double>(at) / static_cast<double>(a->size()), depth, 0.06) << depth;
    // On a line boundary (the end of the stretch for depth 1).
    EXPECT_TRUE(at == 0 || doc[at - 1] == '\n' || at == a->size()) << depth;
  }
}

TEST(NeedleTest, FactsAreDeterministicAndVaried) {
  std::set<std::string> answers;
  for (uint64_t s = 1; s <= 40; ++s) {
    const NeedleFact f = MakeNeedleFact(s);
    EXPECT_EQ(f.sentence, MakeNeedleFact(s).sentence);
    EXPECT_NE(f.sentence.find(f.answer), std::string::npos);
    EXPECT_EQ(f.question.find(f.answer), std::string::npos) << f.question;
    EXPECT_EQ(f.question.back(), '?');
    answers.insert(f.answer);
  }
  EXPECT_GT(answers.size(), 10u);
}

TEST_F(RereadTest, NeedleRunsAskLikeAndTagsEveryTrial) {
  std::string prose;
  for (int i = 0; i < 200; ++i) prose += "Line " + std::to_string(i) + " of filler prose here.\n";
  NeedleOptions o;
  o.lengths = {200, 400};
  o.depths = {0.0, 1.0};
  o.trials = 2;
  o.fillers = {{"prose", prose}};
  o.max_tokens = 2;
  int resets = 0;
  auto r = RunNeedle(*session_, model::ChatTemplate::Plain(), o,
                     [&] {
                       ++resets;
                       std::set<memory::DocumentId> docs;
                       for (const auto& c : bank_->ListChunks()) docs.insert(c.doc_id);
                       for (auto d : docs) RETURN_IF_ERROR(bank_->DeleteDocument(d).status());
                       return Status::Ok();
                     });
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 8u);
  EXPECT_EQ(resets, 8);
  for (size_t i = 0; i < r->size(); ++i) {
    const NeedleTrial& t = (*r)[i];
    EXPECT_EQ(t.requested_length, i < 4 ? 200 : 400);
    EXPECT_NEAR(static_cast<double>(t.length), static_cast<double>(t.requested_length), 60.0);
    EXPECT_FALSE(t.expected.empty());
    EXPECT_EQ(ToJson(t)["question"], t.question);
  }
  // The ceiling needs no bank and marks its trials.
  o.ceiling = true;
  o.ceiling_tokens = 64;
  retriever::LongContextOptions off = opts_;
  off.use_memory = false;
  auto plain = retriever::LongContextSession::Create(model_.get(), tok_.get(), nullptr, &embedder_, off);
  ASSERT_TRUE(plain.ok()) << plain.status();
  auto c = RunNeedle(**plain, model::ChatTemplate::Plain(), o, {});
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->size(), 4u);
  for (const auto& t : *c) {
    EXPECT_TRUE(t.ceiling);
    EXPECT_EQ(t.requested_length, 64);
  }
  o.fillers.clear();
  EXPECT_EQ(RunNeedle(*session_, model::ChatTemplate::Plain(), o, {}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(RereadTest, PerplexityRunsPerModeAndWithoutMemory) {
  std::string text;
  for (int i = 0; i < 60; ++i) text += "abcd line " + std::to_string(i) + ".\n";
  retriever::LongContextOptions plain_o = opts_;
  plain_o.use_memory = false;
  auto plain = retriever::LongContextSession::Create(model_.get(), tok_.get(), nullptr, &embedder_, plain_o);
  ASSERT_TRUE(plain.ok());
  PerplexityOptions o;
  o.seq_len = 256;
  o.scored_tokens = 64;
  o.max_windows = 2;
  o.query_tokens = 32;
  auto r = RunPerplexity(*session_, **plain, text, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->modes, "reread");
  EXPECT_GT(r->ppl_memory, 1.0);
  EXPECT_GT(r->ppl_full, 1.0);
  // Re-read context changes the scores (the excerpts precede the scored tokens).
  EXPECT_NE(r->ppl_memory, r->ppl_sliding);
  // No memory at all (`eval perplexity --no-memory`): the baselines alone, nothing ingested.
  auto none = RunPerplexity(**plain, **plain, text, o);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->modes, "none");
  EXPECT_DOUBLE_EQ(none->ppl_memory, none->ppl_sliding);
  EXPECT_DOUBLE_EQ(none->ppl_sliding, r->ppl_sliding);
}

TEST(MemoryModesTest, RelativePathsFallBackToTheRootAboveTheConfigsFolder) {
  // Root R (MUNINN_HOME) holds models/both.gguf; a config in D/configs/ names it and
  // models/only-in-d.gguf, which exists under D only: the first resolves under R, the second
  // under D. Outside a configs/ folder nothing falls back.
  const auto base =
      std::filesystem::temp_directory_path() / ("muninn_cfgroot_" + std::to_string(::getpid()));
  const auto root = base / "root";
  const auto dir = base / "d";
  for (const auto& p : {root / "models", dir / "configs", dir / "models"}) {
    std::filesystem::create_directories(p);
  }
  std::ofstream(root / "models" / "both.gguf") << "x";
  std::ofstream(dir / "models" / "both.gguf") << "x";
  std::ofstream(dir / "models" / "only-in-d.gguf") << "x";
  ASSERT_EQ(::setenv("MUNINN_HOME", root.c_str(), 1), 0);
  const auto cfg = (dir / "configs" / "c.json").string();
  std::ofstream(cfg) << R"({"model": "models/both.gguf", "embedder": "models/only-in-d.gguf"})";
  auto c = LoadAppConfig(cfg);
  const auto loose = (dir / "c.json").string();
  std::ofstream(loose) << R"({"model": "models/only-in-d.gguf"})";
  auto l = LoadAppConfig(loose);
  ::unsetenv("MUNINN_HOME");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_path, (root / "models" / "both.gguf").lexically_normal().string());
  EXPECT_EQ(c->embedder, (dir / "models" / "only-in-d.gguf").lexically_normal().string());
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->model_path, (root / "models" / "only-in-d.gguf").lexically_normal().string());
  std::filesystem::remove_all(base);
}

TEST(MemoryModesTest, RereadRetrievalMethodComesFromTheConfig) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("muninn_rr_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& body) {
    const auto p = (dir / "c.json").string();
    std::ofstream(p) << body;
    return p;
  };
  auto c = LoadAppConfig(write(R"({"model": "m", "long_context": {"reread": {"top_k": 3}}})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->long_context.reread.retrieval, retriever::RetrievalMethod::kHybrid);  // default
  c = LoadAppConfig(
      write(R"({"model": "m", "long_context": {"reread": {"retrieval": "dense"}}})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->long_context.reread.retrieval, retriever::RetrievalMethod::kDense);
  auto bad = LoadAppConfig(
      write(R"({"model": "m", "long_context": {"reread": {"retrieval": "bm25"}}})"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("reread.retrieval"), std::string::npos) << bad.status();
  // Focus and placement: defaults, values, and a clear error for an unknown placement.
  EXPECT_EQ(c->long_context.reread.focus, 0);
  EXPECT_FLOAT_EQ(c->long_context.reread.focus_margin, 0.2f);
  EXPECT_EQ(c->long_context.reread.placement, retriever::ExcerptPlacement::kBeforeLastLine);
  c = LoadAppConfig(write(
      R"({"model": "m", "long_context": {"reread": {"focus": -1, "focus_margin": 0.5, "placement": "start"}}})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->long_context.reread.focus, -1);
  EXPECT_FLOAT_EQ(c->long_context.reread.focus_margin, 0.5f);
  EXPECT_EQ(c->long_context.reread.placement, retriever::ExcerptPlacement::kStart);
  bad = LoadAppConfig(
      write(R"({"model": "m", "long_context": {"reread": {"focus_margin": "wide"}}})"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("reread.focus_margin"), std::string::npos) << bad.status();
  bad = LoadAppConfig(
      write(R"({"model": "m", "long_context": {"reread": {"placement": "end"}}})"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("reread.placement"), std::string::npos) << bad.status();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace muninn::tools
