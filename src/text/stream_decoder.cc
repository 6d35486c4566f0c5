#include "text/stream_decoder.h"

#include "text/utf8.h"

namespace engram {

StreamDecoder::StreamDecoder(Tokenizer tokenizer, bool skip_special_tokens)
    : tokenizer_(std::move(tokenizer)),
      skip_special_tokens_(skip_special_tokens),
      chain_(tokenizer_.decoder().kind() == TokenDecoder::Kind::kChain) {
  if (chain_) stream_ = TokenDecoder::Stream(&tokenizer_.decoder());
}

std::string StreamDecoder::Push(int32_t id) {
  if (chain_) {
    const auto token = tokenizer_.IdToToken(id);
    if (!token.has_value() || (skip_special_tokens_ && tokenizer_.IsSpecial(id))) return {};
    return stream_.Push(*token);
  }
  const std::string bytes =
      tokenizer_.Decode(std::span<const int32_t>(&id, 1), skip_special_tokens_);
  if (bytes.empty()) return {};
  if (!first_) pending_ += tokenizer_.decode_separator();
  first_ = false;
  pending_ += bytes;
  const size_t complete = utf8::CompletePrefix(pending_);
  if (complete == 0) return {};
  std::string out = utf8::Lossy(std::string_view(pending_).substr(0, complete));
  pending_.erase(0, complete);
  return out;
}

std::string StreamDecoder::Finish() {
  if (chain_) return stream_.Finish();
  std::string out = utf8::Lossy(pending_);
  pending_.clear();
  first_ = true;
  return out;
}

size_t StreamDecoder::pending_bytes() const {
  return chain_ ? stream_.pending_bytes() : pending_.size();
}

}  // namespace engram
