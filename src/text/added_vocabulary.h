// AddedVocabulary: the "added_tokens" of a Hugging Face tokenizer.json, found in the text
// before pre-tokenization as HF does: leftmost-longest match, first the tokens with
// normalized = false on the raw text, then those with normalized = true on the normalized
// pieces; single_word, lstrip and rstrip honored. Immutable, thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace engram {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

class AddedVocabulary {
 public:
  // One stretch of text: an added token (id >= 0, text = its matched span, whitespace that
  // lstrip/rstrip took included) or plain text to pre-tokenize (id = -1).
  struct Segment {
    std::string_view text;
    int32_t id;
  };

  AddedVocabulary() = default;
  // `normalize` maps a normalized token's content to the form it is matched in (the
  // tokenizer's normalizer); contents it cannot map are matched as written.
  template <typename NormalizeFn>
  AddedVocabulary(std::vector<AddedToken> tokens, NormalizeFn normalize)
      : tokens_(std::move(tokens)) {
    for (size_t i = 0; i < tokens_.size(); ++i) {
      Trie& trie = tokens_[i].normalized ? normalized_ : raw_;
      trie.Insert(tokens_[i].normalized ? normalize(tokens_[i].content) : tokens_[i].content,
                  static_cast<int32_t>(i));
    }
  }

  // Splits `text` by the tokens with normalized == `normalized_set`, appending segments.
  void Split(std::string_view text, bool normalized_set, std::vector<Segment>* out) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  bool empty() const { return tokens_.empty(); }
  bool has_normalized() const { return !normalized_.empty(); }

 private:
  // A byte trie over token contents.
  class Trie {
   public:
    void Insert(std::string_view key, int32_t token);
    bool empty() const { return nodes_.size() <= 1; }
    // The longest key that starts at text[pos]: its token index and length, or -1.
    int32_t LongestAt(std::string_view text, size_t pos, size_t* len) const;
    bool MayStart(uint8_t b) const { return first_[b]; }

   private:
    struct Node {
      std::vector<std::pair<uint8_t, int32_t>> next;  // sorted by byte
      int32_t token = -1;
    };
    std::vector<Node> nodes_{1};
    bool first_[256] = {};
  };

  std::vector<AddedToken> tokens_;
  Trie raw_, normalized_;
};

}  // namespace engram
