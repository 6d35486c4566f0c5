#include "text/stream_decoder.h"

#include "text/utf8.h"

namespace engram {

std::string StreamDecoder::Push(int32_t id) {
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
  std::string out = utf8::Lossy(pending_);
  pending_.clear();
  first_ = true;
  return out;
}

}  // namespace engram
