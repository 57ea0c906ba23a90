// Building a Tokenizer: from plain vocabulary data (what a GGUF file or a tokenizer.json holds),
// from a Hugging Face folder / tokenizer.json, from a SentencePiece tokenizer.model, or from a
// path of any of these kinds.
//
// Every loader treats its input as untrusted: bad ids, missing fields, unknown algorithms and
// malformed files are InvalidArgument / Unimplemented errors naming what is wrong, never crashes.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "muninn/core/status.h"
#include "muninn/model/tokenizer.h"

namespace muninn::model {

// The vocabulary in plain vectors, GGUF-style. Fields that do not apply to `model` are ignored.
struct VocabSpec {
  // "gpt2" (byte-level BPE), "llama" (SentencePiece scores + byte fallback), "bert" (WordPiece).
  std::string model;
  // Byte-level BPE pre-tokenizer (GGUF tokenizer.ggml.pre): "default"/"gpt2" (GPT-2 regex),
  // "smollm" (each digit alone, then GPT-2), "llama3"/"llama-bpe" (Llama-3 regex),
  // "qwen2" (Llama-3 regex with single digits), "none" (whole text is one word).
  std::string pre = "default";
  std::vector<std::string> tokens;   // [n_vocab] vocabulary strings, index = id
  std::vector<float> scores;         // [n_vocab] or empty (SentencePiece merge priority)
  std::vector<int32_t> token_types;  // [n_vocab] TokenType values, or empty (all normal)
  std::vector<std::string> merges;   // BPE merges "left right", highest priority first
  TokenId bos_id = kNoToken;
  TokenId eos_id = kNoToken;
  TokenId unk_id = kNoToken;
  TokenId pad_id = kNoToken;
  TokenId sep_id = kNoToken;           // WordPiece [SEP]
  TokenId cls_id = kNoToken;           // WordPiece [CLS]
  std::vector<TokenId> extra_eog_ids;  // beyond eos: <|im_end|>, <|eot_id|>, ...
  // Unset means the model's usual default (BOS: llama yes, gpt2 no; EOS no; bert [CLS]/[SEP] yes).
  std::optional<bool> add_bos;
  std::optional<bool> add_eos;
  // SentencePiece: prepend "▁" to the text (GGUF tokenizer.ggml.add_space_prefix, default true).
  // Byte-level BPE: prepend " " when the text does not start with one (HF add_prefix_space).
  std::optional<bool> add_space_prefix;
  // Byte-level BPE: a word that is itself in the vocabulary is not merged (Llama-3).
  bool ignore_merges = false;
  // WordPiece (BertNormalizer / WordPiece model).
  bool lowercase = true;
  std::optional<bool> strip_accents;  // unset: follows lowercase
  bool handle_chinese_chars = true;
  bool clean_text = true;
  std::string continuing_subword_prefix = "##";
  int32_t max_input_chars_per_word = 100;
};

// Adds eog ids named by well-known end-of-turn texts present in the vocabulary
// (<|im_end|>, <|eot_id|>, <|end_turn|>, <|end_of_text|>, <|endoftext|>, </s>).
void AddKnownEogTokens(VocabSpec* spec);

StatusOr<std::unique_ptr<Tokenizer>> CreateTokenizer(const VocabSpec& spec);

// A Hugging Face tokenizer: `path` is a folder with tokenizer.json (or vocab.txt for BERT, or
// tokenizer.model), or a tokenizer.json file. tokenizer_config.json, when present, may override
// add_bos / add_eos.
StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizer(const std::string& path);

// Parses the text of a tokenizer.json. `config_json` is the text of tokenizer_config.json or empty.
StatusOr<std::unique_ptr<Tokenizer>> ParseHfTokenizerJson(std::string_view tokenizer_json,
                                                          std::string_view config_json = {});

// A SentencePiece tokenizer.model file, run by libsentencepiece.
StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceModel(const std::string& path);

}  // namespace muninn::model

namespace muninn::model {

class GgufFile;

// The tokenizer.ggml.* keys of a GGUF file as a VocabSpec (eog tokens added by name).
StatusOr<VocabSpec> VocabSpecFromGguf(const GgufFile& gguf);
StatusOr<std::unique_ptr<Tokenizer>> CreateTokenizerFromGguf(const GgufFile& gguf);
// tokenizer.chat_template of a GGUF file, or "" when it has none.
std::string GgufChatTemplate(const GgufFile& gguf);
// chat_template of an HF folder's tokenizer_config.json (string form, or the entry named
// "default" in the list form), or "" when there is none.
std::string HfChatTemplate(const std::string& dir);

// Whatever `path` is: a .gguf file, a tokenizer.model, a tokenizer.json, or an HF folder.
StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path);

}  // namespace muninn::model
