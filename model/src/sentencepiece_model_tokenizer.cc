// The adapter around libsentencepiece: the only file that includes it. SentencePiece reports
// errors through its own util::Status and does not throw, but the catch-all below keeps any
// std exception (e.g. bad_alloc on a hostile file) from escaping.
#include <sentencepiece_processor.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "muninn/model/tokenizer_factory.h"
#include "vocab_tokenizer.h"

namespace muninn::model {

namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581 ▁

class SentencePieceModelTokenizer final : public Tokenizer {
 public:
  static StatusOr<std::unique_ptr<Tokenizer>> Open(const std::string& path) {
    std::unique_ptr<SentencePieceModelTokenizer> t(new SentencePieceModelTokenizer());
    try {
      const auto st = t->sp_.Load(path);
      if (!st.ok()) {
        return InvalidArgumentError("cannot load SentencePiece model '" + path +
                                    "': " + st.ToString());
      }
    } catch (const std::exception& e) {
      return InvalidArgumentError("cannot load SentencePiece model '" + path + "': " + e.what());
    }
    t->Init();
    return std::unique_ptr<Tokenizer>(std::move(t));
  }

  TokenizerKind kind() const override { return TokenizerKind::kSentencePieceModel; }

  std::vector<TokenId> Encode(std::string_view text, bool add_special,
                              bool parse_special) const override {
    std::vector<TokenId> out;
    if (add_special && add_bos_) out.push_back(bos_id_);
    // libsentencepiece matches user-defined pieces itself; control pieces only ever come from
    // this splitter.
    controls_.Split(
        text, parse_special,
        [&](std::string_view fragment) {
          for (int id : sp_.EncodeAsIds({fragment.data(), fragment.size()})) out.push_back(id);
        },
        [&](TokenId id) { out.push_back(id); });
    if (add_special && add_eos_) out.push_back(eos_id_);
    return out;
  }

  // Runs of ordinary ids between control tokens go to libsentencepiece, which drops the leading
  // space of every run it decodes; only the text's first one may go (as Tokenizer::Decode and
  // IncrementalDetokenizer do), so a later run gets it back, and a skipped control token does
  // not split a run at all (found by tests/fuzz/tokenizer_text_fuzz.cc: stream != Decode).
  std::string Decode(std::span<const TokenId> ids, bool skip_special) const override {
    std::string out;
    std::vector<int> run;
    bool at_start = true;
    auto flush = [&] {
      if (run.empty()) return;
      std::string text = sp_.DecodeIds(run);
      if (!at_start && dummy_prefix_ && sp_.IdToPiece(run[0]).starts_with(kSpaceMark)) {
        text.insert(0, 1, ' ');
      }
      out += text;
      run.clear();
      at_start = false;
    };
    for (TokenId id : ids) {
      if (id < 0 || id >= vocab_size()) continue;
      if (sp_.IsControl(id)) {
        if (skip_special) continue;
        flush();
        out += sp_.IdToPiece(id);
        at_start = false;
        continue;
      }
      run.push_back(id);
    }
    flush();
    return out;
  }

  std::string TokenToPiece(TokenId id) const override {
    if (id < 0 || id >= vocab_size()) return {};
    const std::string& piece = sp_.IdToPiece(id);
    if (sp_.IsByte(id) && piece.size() == 6) {
      return std::string(1,
                         static_cast<char>(std::strtol(piece.substr(3, 2).c_str(), nullptr, 16)));
    }
    if (sp_.IsControl(id)) return piece;
    std::string out;
    for (size_t pos = 0; pos < piece.size();) {
      if (std::string_view(piece).substr(pos).starts_with(kSpaceMark)) {
        out.push_back(' ');
        pos += kSpaceMark.size();
      } else {
        out.push_back(piece[pos++]);
      }
    }
    return out;
  }

  std::string_view TokenText(TokenId id) const override {
    if (id < 0 || id >= vocab_size()) return {};
    return sp_.IdToPiece(id);
  }

  TokenType GetTokenType(TokenId id) const override {
    if (id < 0 || id >= vocab_size()) return TokenType::kUndefined;
    if (sp_.IsControl(id)) return TokenType::kControl;
    if (sp_.IsUnknown(id)) return TokenType::kUnknown;
    if (sp_.IsUnused(id)) return TokenType::kUnused;
    if (sp_.IsByte(id)) return TokenType::kByte;
    return TokenType::kNormal;
  }

  TokenId TokenIdOf(std::string_view text) const override {
    const int id = sp_.PieceToId({text.data(), text.size()});
    // PieceToId answers unk_id for unknown pieces; only the unk piece itself maps there.
    if (id == sp_.unk_id() && text != sp_.IdToPiece(id)) return kNoToken;
    return id;
  }

  int32_t vocab_size() const override { return sp_.GetPieceSize(); }
  bool strips_leading_space() const override { return dummy_prefix_; }

 private:
  SentencePieceModelTokenizer() = default;

  void Init() {
    auto opt = [this](int id) { return id >= 0 && id < vocab_size() ? id : kNoToken; };
    bos_id_ = opt(sp_.bos_id());
    eos_id_ = opt(sp_.eos_id());
    unk_id_ = opt(sp_.unk_id());
    pad_id_ = opt(sp_.pad_id());
    add_bos_ = bos_id_ != kNoToken;
    if (eos_id_ != kNoToken) eog_ids_.push_back(eos_id_);
    for (int id = 0; id < vocab_size(); ++id) {
      if (sp_.IsControl(id)) controls_.Add(sp_.IdToPiece(id), id, /*is_control=*/true);
    }
    controls_.Build();
    const std::vector<int> probe = sp_.EncodeAsIds("a");
    dummy_prefix_ = !probe.empty() && sp_.IdToPiece(probe[0]).starts_with(kSpaceMark);
  }

  sentencepiece::SentencePieceProcessor sp_;
  internal::SpecialTokenMatcher controls_;
  bool dummy_prefix_ = true;
};

}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceModel(const std::string& path) {
  return SentencePieceModelTokenizer::Open(path);
}

}  // namespace muninn::model
