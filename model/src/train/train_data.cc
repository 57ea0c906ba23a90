#include "muninn/model/train_data.h"

#include "muninn/core/cross_entropy.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace muninn::model {

namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Status TrainData::AddDocument(std::span<const TokenId> doc, int64_t block) {
  const int64_t doc_index = n_documents_++;
  if (doc.size() < 2) return Status::Ok();
  const int64_t start = static_cast<int64_t>(tokens_.size());
  tokens_.insert(tokens_.end(), doc.begin(), doc.end());
  labels_.insert(labels_.end(), doc.begin() + 1, doc.end());
  labels_.push_back(kIgnoreLabel);  // the document's last token predicts nothing
  const int64_t n = static_cast<int64_t>(doc.size());
  for (int64_t j = 0; j * block < n - 1; ++j) {
    const int64_t len = std::min(block, n - 1 - j * block);
    blocks_.push_back(Block{start + j * block, len, doc_index, start});
    n_tokens_ += len;
  }
  return Status::Ok();
}

std::span<const TokenId> TrainData::ids(int64_t i) const {
  const Block& b = blocks_[static_cast<size_t>(i)];
  return std::span<const TokenId>(tokens_).subspan(static_cast<size_t>(b.start),
                                                   static_cast<size_t>(b.len));
}

std::span<const TokenId> TrainData::labels(int64_t i) const {
  const Block& b = blocks_[static_cast<size_t>(i)];
  return std::span<const TokenId>(labels_).subspan(static_cast<size_t>(b.start),
                                                   static_cast<size_t>(b.len));
}

std::span<const TokenId> TrainData::preceding(int64_t i, int64_t n) const {
  const Block& b = blocks_[static_cast<size_t>(i)];
  const int64_t from = std::max(b.doc_start, b.start - std::max<int64_t>(n, 0));
  return std::span<const TokenId>(tokens_).subspan(static_cast<size_t>(from),
                                                   static_cast<size_t>(b.start - from));
}

StatusOr<TrainData> TrainData::FromDocuments(const std::vector<std::vector<TokenId>>& docs,
                                             int32_t n_vocab, int64_t block) {
  if (block < 1) return InvalidArgumentError("block length must be >= 1");
  TrainData d;
  for (size_t i = 0; i < docs.size(); ++i) {
    for (TokenId id : docs[i]) {
      if (id < 0 || id >= n_vocab) {
        return InvalidArgumentError("document " + std::to_string(i) + " has token id " +
                                    std::to_string(id) + " outside the vocabulary [0, " +
                                    std::to_string(n_vocab) + ")");
      }
    }
    RETURN_IF_ERROR(d.AddDocument(docs[i], block));
  }
  if (d.blocks_.empty())
    return InvalidArgumentError("the training data has no document of 2 or more tokens");
  return d;
}

StatusOr<TrainData> TrainData::FromLabeledBlocks(const std::vector<std::vector<TokenId>>& ids,
                                                 const std::vector<std::vector<TokenId>>& labels,
                                                 int32_t n_vocab) {
  if (ids.size() != labels.size()) {
    return InvalidArgumentError("labelled blocks: " + std::to_string(ids.size()) +
                                " id lists but " + std::to_string(labels.size()) + " label lists");
  }
  if (ids.empty()) return InvalidArgumentError("labelled blocks: no block given");
  TrainData d;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string where = "labelled block " + std::to_string(i);
    if (ids[i].empty()) return InvalidArgumentError(where + " is empty");
    if (ids[i].size() != labels[i].size()) {
      return InvalidArgumentError(where + " has " + std::to_string(ids[i].size()) + " ids but " +
                                  std::to_string(labels[i].size()) + " labels");
    }
    int64_t supervised = 0;
    for (size_t t = 0; t < ids[i].size(); ++t) {
      const TokenId id = ids[i][t], l = labels[i][t];
      if (id < 0 || id >= n_vocab || (l != kIgnoreLabel && (l < 0 || l >= n_vocab))) {
        return InvalidArgumentError(where + " has a token id or label outside the vocabulary [0, " +
                                    std::to_string(n_vocab) + ")");
      }
      supervised += l != kIgnoreLabel;
    }
    if (supervised == 0) return InvalidArgumentError(where + " has no supervised position");
    const int64_t at = static_cast<int64_t>(d.tokens_.size());
    d.blocks_.push_back(Block{at, static_cast<int64_t>(ids[i].size()), d.n_documents_++, at});
    d.tokens_.insert(d.tokens_.end(), ids[i].begin(), ids[i].end());
    d.labels_.insert(d.labels_.end(), labels[i].begin(), labels[i].end());
    d.n_tokens_ += supervised;
  }
  return d;
}

StatusOr<TrainData> TrainData::Load(const std::vector<std::string>& paths,
                                    const Tokenizer* tokenizer, int32_t n_vocab, int64_t block,
                                    bool add_bos) {
  if (block < 1) return InvalidArgumentError("block length must be >= 1");
  if (paths.empty()) return InvalidArgumentError("no training data files given");
  TrainData d;
  auto encode = [&](const std::string& text,
                    const std::string& where) -> StatusOr<std::vector<TokenId>> {
    if (tokenizer == nullptr) {
      return InvalidArgumentError(where +
                                  " holds text but the model has no tokenizer; give "
                                  "token ids as {\"ids\": [...]} JSONL lines");
    }
    return tokenizer->Encode(text, add_bos, /*parse_special=*/false);
  };
  for (const std::string& path : paths) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return NotFoundError("cannot open training data file " + path);
    if (!EndsWith(path, ".jsonl")) {
      std::stringstream ss;
      ss << in.rdbuf();
      ASSIGN_OR_RETURN(std::vector<TokenId> ids, encode(ss.str(), path));
      RETURN_IF_ERROR(d.AddDocument(ids, block));
      continue;
    }
    std::string line;
    int64_t line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = path + ":" + std::to_string(line_no);
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object()) {
        return InvalidArgumentError(where + " is not a JSON object");
      }
      std::vector<TokenId> ids;
      if (j.contains("ids")) {
        if (!j["ids"].is_array()) return InvalidArgumentError(where + ": \"ids\" must be a list");
        for (const auto& x : j["ids"]) {
          if (!x.is_number_integer()) {
            return InvalidArgumentError(where + ": \"ids\" must hold integers");
          }
          const int64_t id = x.get<int64_t>();
          if (id < 0 || id >= n_vocab) {
            return InvalidArgumentError(where + ": token id " + std::to_string(id) +
                                        " is outside the vocabulary [0, " +
                                        std::to_string(n_vocab) + ")");
          }
          ids.push_back(static_cast<TokenId>(id));
        }
      } else if (j.contains("text") && j["text"].is_string()) {
        ASSIGN_OR_RETURN(ids, encode(j["text"].get<std::string>(), where));
      } else {
        return InvalidArgumentError(where + " has neither a \"text\" string nor an \"ids\" list");
      }
      RETURN_IF_ERROR(d.AddDocument(ids, block));
    }
  }
  if (d.blocks_.empty()) {
    return InvalidArgumentError("the training data has no document of 2 or more tokens");
  }
  return d;
}

}  // namespace muninn::model
