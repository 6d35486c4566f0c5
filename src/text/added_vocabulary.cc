#include "text/added_vocabulary.h"

#include <algorithm>

#include "text/unicode_ops.h"
#include "text/utf8.h"

namespace engram {

void AddedVocabulary::Trie::Insert(std::string_view key, int32_t token) {
  if (key.empty()) return;
  int32_t node = 0;
  for (char c : key) {
    const auto b = static_cast<uint8_t>(c);
    auto& next = nodes_[static_cast<size_t>(node)].next;
    auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(b, int32_t{-1}));
    if (it != next.end() && it->first == b) {
      node = it->second;
      continue;
    }
    const auto child = static_cast<int32_t>(nodes_.size());
    next.insert(it, {b, child});
    nodes_.emplace_back();
    node = child;
  }
  // On duplicate contents the first token wins.
  if (nodes_[static_cast<size_t>(node)].token < 0) nodes_[static_cast<size_t>(node)].token = token;
  first_[static_cast<uint8_t>(key[0])] = true;
}

int32_t AddedVocabulary::Trie::LongestAt(std::string_view text, size_t pos, size_t* len) const {
  int32_t node = 0, best = -1;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto b = static_cast<uint8_t>(text[i]);
    const auto& next = nodes_[static_cast<size_t>(node)].next;
    auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(b, int32_t{-1}));
    if (it == next.end() || it->first != b) break;
    node = it->second;
    if (nodes_[static_cast<size_t>(node)].token >= 0) {
      best = nodes_[static_cast<size_t>(node)].token;
      *len = i + 1 - pos;
    }
  }
  return best;
}

namespace {

bool EndsWithWordChar(std::string_view s) {
  if (s.empty()) return false;
  size_t p = s.size();
  return unicode::IsWordChar(utf8::Prev(s, &p));
}

bool StartsWithWordChar(std::string_view s) {
  if (s.empty()) return false;
  size_t p = 0;
  return unicode::IsWordChar(utf8::Next(s, &p));
}

}  // namespace

void AddedVocabulary::Split(std::string_view text, bool normalized_set,
                            std::vector<Segment>* out) const {
  const Trie& trie = normalized_set ? normalized_ : raw_;
  if (trie.empty() || text.empty()) {
    if (!text.empty()) out->push_back({text, -1});
    return;
  }
  size_t emitted = 0;  // text[0, emitted) is already in `out`
  size_t pos = 0;      // where the search for the next match resumes
  while (pos < text.size()) {
    if (!trie.MayStart(static_cast<uint8_t>(text[pos]))) {
      ++pos;
      continue;
    }
    size_t len = 0;
    const int32_t t = trie.LongestAt(text, pos, &len);
    if (t < 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = tokens_[static_cast<size_t>(t)];
    size_t start = pos, stop = pos + len;
    pos = stop;  // as HF: the search goes on after the match, whether it is used or not
    if (tok.single_word &&
        (EndsWithWordChar(text.substr(0, start)) || StartsWithWordChar(text.substr(stop)))) {
      continue;
    }
    if (tok.lstrip) {
      const std::string_view before =
          unicode::StripWhitespace(text.substr(0, start), /*left=*/false, /*right=*/true);
      start = std::max(before.size(), emitted);
    }
    if (tok.rstrip) {
      const std::string_view after =
          unicode::StripWhitespace(text.substr(stop), /*left=*/true, /*right=*/false);
      stop = text.size() - after.size();
    }
    if (start < emitted) start = emitted;
    if (start > emitted) out->push_back({text.substr(emitted, start - emitted), -1});
    out->push_back({text.substr(start, stop - start), tok.id});
    emitted = stop;
    pos = std::max(pos, stop);
  }
  if (emitted < text.size()) out->push_back({text.substr(emitted), -1});
}

}  // namespace engram
