#include "text/compression_builder.h"

#include <nlohmann/json.hpp>

#include <unordered_map>

#include "text/text_normalizer.h"
#include "text/utf8.h"

namespace engram {
namespace {

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// The reference's normalizer, written as the tokenizers.normalizers.Sequence it builds.
// U+E000 (private use) protects a lone space from Strip.
const char* const kReferenceNormalizer = R"({"type": "Sequence", "normalizers": [
  {"type": "NFKC"},
  {"type": "NFD"},
  {"type": "StripAccents"},
  {"type": "Lowercase"},
  {"type": "Replace", "pattern": {"Regex": "[ \t\r\n]+"}, "content": " "},
  {"type": "Replace", "pattern": {"Regex": "^ $"}, "content": "\uE000"},
  {"type": "Strip", "strip_left": true, "strip_right": true},
  {"type": "Replace", "pattern": {"String": "\uE000"}, "content": " "}
]})";

Result<const TextNormalizer*> ReferenceNormalizer() {
  static const Result<TextNormalizer> normalizer = TextNormalizer::FromJson(
      nlohmann::json::parse(kReferenceNormalizer, nullptr, /*allow_exceptions=*/false));
  if (!normalizer.ok()) return normalizer.status();
  return &normalizer.value();
}

}  // namespace

Result<std::string> CompressionKey(std::string_view text) {
  ENGRAM_ASSIGN_OR_RETURN(const TextNormalizer* n, ReferenceNormalizer());
  ENGRAM_ASSIGN_OR_RETURN(std::string key, n->Apply(text));
  if (key.empty()) key.assign(text);  // `norm if norm else text`
  return key;
}

Result<CompressionMap> BuildCompressionMap(const Tokenizer& tokenizer) {
  const int64_t vocab = tokenizer.vocab_size();
  std::vector<int64_t> lookup(static_cast<size_t>(vocab));
  std::unordered_map<std::string, int64_t> id_of_key;
  id_of_key.reserve(static_cast<size_t>(vocab));
  for (int64_t id = 0; id < vocab; ++id) {
    const auto tid = static_cast<int32_t>(id);
    const std::string bytes =
        tokenizer.Decode(std::span<const int32_t>(&tid, 1), /*skip_special_tokens=*/false);
    std::string key;
    if (!utf8::IsValid(bytes) || bytes.find(kReplacementChar) != std::string::npos) {
      // The decoded text holds U+FFFD: the raw token string is the key.
      key = std::string(tokenizer.IdToToken(tid).value_or(std::string_view()));
    } else {
      auto k = CompressionKey(bytes);
      if (!k.ok()) return k.status().WithContext(fmt::format("compression key of token {}", id));
      key = std::move(*k);
    }
    auto [it, inserted] =
        id_of_key.try_emplace(std::move(key), static_cast<int64_t>(id_of_key.size()));
    lookup[static_cast<size_t>(id)] = it->second;
  }
  const auto num_compressed = static_cast<int64_t>(id_of_key.size());
  return CompressionMap::FromLookup(std::move(lookup), num_compressed);
}

}  // namespace engram
