// Tokenizer: a Hugging Face tokenizer.json with a BPE model, byte-level (DeepSeek-V3, Llama 3,
// Qwen2, GPT-2 style) or SentencePiece-style with byte fallback (Llama 2, Mistral, Gemma 3),
// encoding and decoding as HF's Rust tokenizers library does: added tokens (matched first)
// -> normalizer -> pre_tokenizer (Split/ByteLevel/Metaspace, PCRE2) -> BPE ->
// post_processor; decoding through the decoder chain. The exact pipeline pieces supported
// are listed in text_normalizer.h, pretokenizer.h, bpe.h, token_decoder.h; anything else
// fails Load with UNIMPLEMENTED.
//
// A Tokenizer is an immutable, cheaply copyable handle (copies share the loaded data) and
// is safe to use from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"

namespace engram {

class TokenDecoder;

struct TokenizerOptions {
  // Whether Encode(text, add_special_tokens = true) starts with the BOS token. Unset: as the
  // post_processor of tokenizer.json says (DeepSeek-V3's adds none, while transformers'
  // LlamaTokenizerFast with add_bos_token = true adds it: set true to match that).
  std::optional<bool> add_bos;
  // BOS/EOS token contents. Empty: tokenizer_config.json beside tokenizer.json (bos_token,
  // eos_token), else the post_processor's template, else well-known names.
  std::string bos_token;
  std::string eos_token;
};

class Tokenizer {
 public:
  // Reads and checks `path`. NOT_FOUND if it cannot be read; INVALID_ARGUMENT (naming the
  // file and field) for malformed JSON, a missing model, bad vocab/merges or regexes;
  // UNIMPLEMENTED (naming the type) for model/normalizer/pre_tokenizer/decoder types that
  // are not supported.
  static Result<Tokenizer> Load(const std::string& path, const TokenizerOptions& options = {});
  // As Load, from the JSON text; `source` names it in messages.
  static Result<Tokenizer> FromJson(std::string_view json, const TokenizerOptions& options = {},
                                    const std::string& source = "tokenizer.json");

  // Token ids of `text`. INVALID_ARGUMENT "invalid UTF-8 at byte offset N" when `text` is
  // not valid UTF-8. add_special_tokens applies the post-processor (and add_bos).
  Result<std::vector<int32_t>> Encode(std::string_view text, bool add_special_tokens) const;

  // The bytes of `ids` (the decoder applied; ids outside the vocabulary are skipped, special
  // tokens too when skip_special_tokens). The bytes may end in an incomplete UTF-8 character
  // or hold invalid sequences where tokens split characters: see StreamDecoder.
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

  // One past the largest token id (the id space that embeddings and maps must cover).
  int64_t vocab_size() const;
  // Token string (as in tokenizer.json, e.g. "Ġthe") <-> id; nullopt when absent.
  std::optional<int32_t> TokenToId(std::string_view token) const;
  std::optional<std::string_view> IdToToken(int32_t id) const;
  // Whether `id` is an added token marked special (skipped by skip_special_tokens).
  bool IsSpecial(int32_t id) const;
  // -1 when the tokenizer has none.
  int32_t bos_id() const;
  int32_t eos_id() const;
  // The text put between decoded tokens: "" for the ByteLevel decoder, " " without decoder
  // ("" for a decoder chain, which decoder() applies instead).
  std::string_view decode_separator() const;
  // The decoder of tokenizer.json (StreamDecoder streams a chain through it).
  const TokenDecoder& decoder() const;

 private:
  struct Impl;
  static Result<Tokenizer> Build(const nlohmann::json& root, const TokenizerOptions& options,
                                 const nlohmann::json& config);
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace engram
