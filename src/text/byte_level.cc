#include "text/byte_level.h"

#include "text/utf8.h"

namespace engram {

const ByteLevelMap& ByteLevelMap::Get() {
  static const ByteLevelMap map;
  return map;
}

ByteLevelMap::ByteLevelMap() {
  byte_of_cp_.fill(-1);
  auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const char32_t cp = printable(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(next++);
    utf8::Append(cp, &chars_[b]);
    byte_of_cp_[cp] = static_cast<int16_t>(b);
  }
}

void ByteLevelMap::Encode(std::string_view bytes, std::string* out) const {
  for (char c : bytes) out->append(chars_[static_cast<uint8_t>(c)]);
}

bool ByteLevelMap::Decode(std::string_view token, std::string* out) const {
  size_t pos = 0;
  while (pos < token.size()) {
    const char32_t cp = utf8::Next(token, &pos);
    if (cp >= byte_of_cp_.size() || byte_of_cp_[cp] < 0) return false;
    out->push_back(static_cast<char>(byte_of_cp_[cp]));
  }
  return true;
}

}  // namespace engram
