// TokenDecoder: the "decoder" of a Hugging Face tokenizer.json, turning token strings back
// into text as HF's Rust decoders do (decode_chain, then the pieces joined). Supported:
// ByteLevel, Replace (String or Regex pattern), ByteFallback, Fuse, Strip, Metaspace and
// Sequence of those; null joins the token strings with " ". Immutable, thread-safe.
//
// TokenDecoder::Stream applies the same chain token by token for StreamDecoder: what it
// yields, joined, equals Decode of all the tokens. Held back until the text that follows
// settles them: a run of <0xNN> byte tokens (ByteFallback turns the whole run into text
// when it is valid UTF-8, else into one U+FFFD per byte, so a run waits for the next
// non-byte token or the end), an incomplete UTF-8 character after ByteLevel, trailing
// characters that a Strip after Fuse could still remove, and the start of a String pattern
// that a Replace after Fuse could still match. Not exact (documented limits, no known
// tokenizer has them): a Regex Replace, ByteFallback or ByteLevel placed after Fuse applies
// per token instead of to the fused text.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace engram {

class TokenDecoder {
 public:
  enum class Kind {
    kNone,       // no decoder: token strings joined with " "
    kByteLevel,  // ByteLevel alone: each token's byte-level characters are bytes
    kChain,      // anything else: the steps below
  };

  // UNIMPLEMENTED names an unsupported type (and lists the supported ones);
  // INVALID_ARGUMENT a malformed entry.
  static Result<TokenDecoder> FromJson(const nlohmann::json& j);

  Kind kind() const { return kind_; }

  struct Step;  // one decoder of the chain (defined in token_decoder.cc)

  // The text of `tokens` (the token strings of the ids to decode, special tokens already
  // filtered) for kChain; kNone and kByteLevel are decoded by the tokenizer's own tables.
  // Always valid UTF-8.
  std::string Decode(const std::vector<std::string_view>& tokens) const;

  class Stream {
   public:
    Stream() = default;
    explicit Stream(const TokenDecoder* decoder);
    // Adds one token string; returns the text it settled (valid UTF-8, possibly empty).
    std::string Push(std::string_view token);
    // Ends the sequence: returns what was held (as the full decode ends); resets for reuse.
    std::string Finish();
    // Bytes of held input (token bytes of a pending byte run, an incomplete character, or
    // text a later step may still change).
    size_t pending_bytes() const;

   private:
    struct State {
      int64_t index = 0;       // tokens seen (Metaspace: the first is special)
      std::string held;        // ByteFallback run bytes, ByteLevel / Replace / Strip tail
      size_t held_tokens = 0;  // ByteFallback: tokens in the run
      size_t start_left = 0;   // Strip after Fuse: leading characters it may still take
      bool at_start = true;    // Strip after Fuse: nothing but stripped text so far
    };
    std::vector<std::string> Run(std::vector<std::string> batch, bool finish);
    const TokenDecoder* decoder_ = nullptr;
    std::vector<State> states_;
  };

 private:
  static Status AddSteps(const nlohmann::json& j, std::vector<std::shared_ptr<const Step>>* out);
  Kind kind_ = Kind::kNone;
  std::vector<std::shared_ptr<const Step>> steps_;
};

}  // namespace engram
