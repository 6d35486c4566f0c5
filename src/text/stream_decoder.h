// StreamDecoder: turns tokens, as they are generated, into text deltas that are always
// complete UTF-8, for streaming to clients. Byte-level BPE tokens can end inside a
// character (emoji, rare CJK): those bytes are held until the character completes. Bytes
// that can never become valid come out as U+FFFD (as the lossy decode of the whole text).
// With a decoder chain (SentencePiece-style tokenizers: Replace, ByteFallback, Fuse, Strip,
// Metaspace) the chain runs token by token: a run of <0xNN> byte tokens waits for the next
// other token (HF turns an invalid run into one U+FFFD per byte), and Strip removes its
// leading characters only at the start of the whole sequence (see token_decoder.h).
// The concatenation of all Push results and Finish equals utf8::Lossy(Decode(all ids)).
// One per sequence; not thread-safe (the Tokenizer it holds is shared and immutable).
#pragma once

#include <cstdint>
#include <string>

#include "text/token_decoder.h"
#include "text/tokenizer.h"

namespace engram {

class StreamDecoder {
 public:
  StreamDecoder(Tokenizer tokenizer, bool skip_special_tokens);

  // Adds one token; returns the text it completed (possibly empty).
  std::string Push(int32_t id);
  // Ends the stream: returns what is still held, as U+FFFD (empty when the text ended on a
  // character boundary), or, for a decoder chain, as the full decode ends it. The decoder
  // can be reused for a new stream afterwards.
  std::string Finish();

  // Bytes held back, waiting for the rest of a character (0..3), or for a decoder chain,
  // the held input (a byte-fallback run may be longer).
  size_t pending_bytes() const;

 private:
  Tokenizer tokenizer_;
  bool skip_special_tokens_;
  bool first_ = true;
  std::string pending_;
  bool chain_ = false;
  TokenDecoder::Stream stream_;
};

}  // namespace engram
