// The byte <-> character map of byte-level BPE (GPT-2's bytes_to_unicode): each of the 256
// byte values is shown as one printable code point ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF
// stand for themselves; the other bytes become U+0100.. in byte order). Immutable, shared.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace engram {

class ByteLevelMap {
 public:
  static const ByteLevelMap& Get();

  // The UTF-8 form of the code point that stands for `byte`.
  std::string_view Char(uint8_t byte) const { return chars_[byte]; }
  // Maps every byte of `bytes` (appending to out).
  void Encode(std::string_view bytes, std::string* out) const;
  // Maps a byte-level token string back to bytes. False (out unspecified) when a code point
  // of `token` is not one of the 256 (HF then keeps the token's own UTF-8 bytes).
  bool Decode(std::string_view token, std::string* out) const;

 private:
  ByteLevelMap();
  std::array<std::string, 256> chars_;
  std::array<int16_t, 324> byte_of_cp_;  // code point (< 324) -> byte, or -1
};

}  // namespace engram
