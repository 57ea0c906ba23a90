#include "muninn/model/train_data.h"

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
  ++n_documents_;
  if (doc.size() < 2) return Status::Ok();
  const int64_t start = static_cast<int64_t>(tokens_.size());
  tokens_.insert(tokens_.end(), doc.begin(), doc.end());
  const int64_t n = static_cast<int64_t>(doc.size());
  for (int64_t j = 0; j * block < n - 1; ++j) {
    const int64_t len = std::min(block, n - 1 - j * block);
    blocks_.push_back(Block{start + j * block, len});
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
  return std::span<const TokenId>(tokens_).subspan(static_cast<size_t>(b.start + 1),
                                                   static_cast<size_t>(b.len));
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
