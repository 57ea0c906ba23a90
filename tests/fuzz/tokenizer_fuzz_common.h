// Shared pieces of the tokenizer fuzz targets: tiny valid vocabularies built in code (so no real
// vocabulary is committed), their files in every format muninn reads (tokenizer.json, GGUF
// metadata, vocab.txt, a SentencePiece tokenizer.model), the checks every tokenizer that loads
// must pass, and seed writing.
//
// Seeds: a target whose environment has MUNINN_FUZZ_SEED_DIR=DIR writes its seed files into DIR
// from LLVMFuzzerInitialize, before libFuzzer reads the corpus, so `DIR` given as the corpus
// directory starts from valid files (scripts/fuzz.sh does this).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "muninn/model/tokenizer.h"
#include "muninn/model/tokenizer_factory.h"

namespace muninn::fuzz {

// Byte-level BPE: ids 0..255 are the 256 bytes (GPT-2 spelling), then merged pieces, then
// <|im_start|> <|im_end|> (control) and <tool> (user-defined). pre = "smollm".
model::VocabSpec TinyByteLevelSpec();
// SentencePiece ("llama"): <unk> <s> </s>, the 256 <0xXX> byte tokens, then scored pieces.
model::VocabSpec TinySpmSpec();
// WordPiece ("bert"): [PAD] [UNK] [CLS] [SEP] [MASK], words, ## continuations, CJK, punctuation.
model::VocabSpec TinyWordPieceSpec();

// tokenizer.json texts: byte-level BPE (Digits + ByteLevel pre-tokenizer, ChatML added tokens),
// byte-level BPE with a Llama-3 Split regex and ignore_merges, SentencePiece-style BPE
// (Prepend/Replace normalizer, byte_fallback) and WordPiece (BertNormalizer,
// TemplateProcessing).
std::string ByteLevelTokenizerJson();
std::string Llama3TokenizerJson();
std::string SpmBpeTokenizerJson();
std::string WordPieceTokenizerJson();
// A tokenizer_config.json overriding bos/eos and add_bos_token.
std::string TokenizerConfigJson();
// vocab.txt: one WordPiece token per line.
std::string WordPieceVocabTxt();
// A GGUF file with no tensors and the tokenizer.ggml.* keys of `spec` (plus a chat template).
std::vector<uint8_t> GgufWithVocab(const model::VocabSpec& spec, const std::string& chat_template);
// A serialized SentencePiece ModelProto (BPE, byte fallback, identity normalizer), written field
// by field in the protobuf wire format.
std::string TinySentencePieceModelProto();

// The ChatML template of SmolLM2-style checkpoints (with a literal default system turn).
std::string ChatMlTemplate();
std::string Llama3Template();

// Loads a tokenizer.model from bytes (through a memfd, as libsentencepiece reads a path).
StatusOr<std::unique_ptr<model::Tokenizer>> LoadSentencePieceModelBytes(std::string_view bytes);

// Runs every Tokenizer method on `text` and on ids derived from it: Encode with all four flag
// combinations (ids must be in range), Decode both ways, streaming decode (every piece must be
// valid UTF-8), TokenToPiece / TokenText / GetTokenType / TokenIdOf over the vocabulary (up to
// `max_vocab_walk` ids) and out-of-range ids. Aborts (a fuzzer crash) on a broken contract.
// Returns the ids of Encode(text, add_special=false, parse_special=false).
std::vector<model::TokenId> ExerciseTokenizer(const model::Tokenizer& t, std::string_view text,
                                              int32_t max_vocab_walk = 512);

// Concatenated IncrementalDetokenizer output for `ids` (Push each, then Flush).
std::string StreamDecode(const model::Tokenizer& t, const std::vector<model::TokenId>& ids);

// Writes each {name, bytes} into $MUNINN_FUZZ_SEED_DIR when that is set (creating the folder).
void WriteSeedsIfAsked(const std::vector<std::pair<std::string, std::string>>& seeds);

// Aborts with `what` when `ok` is false (libFuzzer reports the abort as a crash with its input).
void FuzzCheck(bool ok, const char* what);

}  // namespace muninn::fuzz
