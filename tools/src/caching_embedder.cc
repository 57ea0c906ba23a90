#include "caching_embedder.h"

#include <algorithm>

namespace muninn::tools {

StatusOr<std::vector<float>> CachingEmbedder::Embed(std::span<const retriever::EmbedRequest> requests) {
  const size_t d = static_cast<size_t>(inner_->dim());
  std::vector<float> out(requests.size() * d);
  std::vector<retriever::EmbedRequest> todo;
  std::vector<size_t> where;
  for (size_t i = 0; i < requests.size(); ++i) {
    // The text and the tokens both go into the key: embedders may read either.
    std::string key(requests[i].text);
    key.append(reinterpret_cast<const char*>(requests[i].tokens.data()),
               requests[i].tokens.size() * sizeof(model::TokenId));
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      std::copy(it->second.begin(), it->second.end(), out.begin() + static_cast<ptrdiff_t>(i * d));
      ++hits_;
    } else {
      todo.push_back(requests[i]);
      where.push_back(i);
      ++misses_;
    }
  }
  if (todo.empty()) return out;
  ASSIGN_OR_RETURN(std::vector<float> fresh, inner_->Embed(todo));
  if (cache_.size() + todo.size() > max_entries_) cache_.clear();
  for (size_t j = 0; j < todo.size(); ++j) {
    const auto first = fresh.begin() + static_cast<ptrdiff_t>(j * d);
    std::copy(first, first + static_cast<ptrdiff_t>(d), out.begin() + static_cast<ptrdiff_t>(where[j] * d));
    std::string key(todo[j].text);
    key.append(reinterpret_cast<const char*>(todo[j].tokens.data()),
               todo[j].tokens.size() * sizeof(model::TokenId));
    cache_.emplace(std::move(key), std::vector<float>(first, first + static_cast<ptrdiff_t>(d)));
  }
  return out;
}

}  // namespace muninn::tools
