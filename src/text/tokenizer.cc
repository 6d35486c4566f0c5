#include "text/tokenizer.h"

#include <nlohmann/json.hpp>
#include "common/file_read.h"
#include "text/vocab_limits.h"

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "text/added_vocabulary.h"
#include "text/bpe.h"
#include "text/byte_level.h"
#include "text/pretokenizer.h"
#include "text/text_normalizer.h"
#include "text/token_decoder.h"
#include "text/utf8.h"

namespace engram {

using Json = nlohmann::json;

struct Tokenizer::Impl {
  BpeModel model;
  TextNormalizer normalizer;
  PreTokenizer pre_tokenizer;
  TokenDecoder decoder;
  AddedVocabulary added;
  std::unordered_map<std::string, int32_t> added_by_content;
  // Per id: the token string, its decoded bytes, whether it exists and is special.
  std::vector<std::string_view> token;
  std::vector<std::string> bytes;
  std::vector<uint8_t> known;
  std::vector<uint8_t> special;
  std::string separator;  // between decoded tokens (decoders other than a chain)
  // Post-processing of a single sequence: prefix + ids + suffix.
  std::vector<int32_t> prefix, suffix;
  int32_t bos = -1, eos = -1;

  explicit Impl(BpeModel m) : model(std::move(m)) {}
  Status EncodePlain(std::string_view text, bool at_start, std::deque<std::string>* arena,
                     std::vector<std::string_view>* pieces, std::vector<int32_t>* ids) const;
};

namespace {

Result<std::vector<AddedToken>> ParseAddedTokens(const Json& j) {
  std::vector<AddedToken> out;
  if (j.is_null()) return out;
  if (!j.is_array()) return InvalidArgument("added_tokens: expected an array");
  for (size_t i = 0; i < j.size(); ++i) {
    const Json& e = j[i];
    if (!e.is_object() || !e.contains("id") || !e["id"].is_number_integer() ||
        !e.contains("content") || !e["content"].is_string()) {
      return InvalidArgument("added_tokens[{}]: expected integer \"id\" and string \"content\"", i);
    }
    AddedToken t;
    const int64_t id = e["id"].get<int64_t>();
    if (id < 0 || id > INT32_MAX)
      return InvalidArgument("added_tokens[{}]: id {} out of range", i, id);
    t.id = static_cast<int32_t>(id);
    t.content = e["content"].get<std::string>();
    if (t.content.empty()) return InvalidArgument("added_tokens[{}]: empty content", i);
    t.special = e.value("special", false);
    t.single_word = e.value("single_word", false);
    t.lstrip = e.value("lstrip", false);
    t.rstrip = e.value("rstrip", false);
    t.normalized = e.value("normalized", !t.special);
    out.push_back(std::move(t));
  }
  return out;
}

// Adds what a post_processor puts around a single sequence to prefix/suffix.
Status ParsePostProcessor(const Json& j, const std::unordered_map<std::string, int32_t>& ids_of,
                          std::vector<int32_t>* prefix, std::vector<int32_t>* suffix) {
  if (j.is_null()) return Status::Ok();
  const std::string type = j.is_object() ? j.value("type", std::string()) : std::string();
  if (type == "ByteLevel") return Status::Ok();  // offsets only
  if (type == "Sequence") {
    if (!j.contains("processors") || !j["processors"].is_array()) {
      return InvalidArgument("post_processor Sequence: expected an array \"processors\"");
    }
    for (const Json& p : j["processors"]) {
      std::vector<int32_t> pre, suf;
      ENGRAM_RETURN_IF_ERROR(ParsePostProcessor(p, ids_of, &pre, &suf));
      prefix->insert(prefix->begin(), pre.begin(), pre.end());
      suffix->insert(suffix->end(), suf.begin(), suf.end());
    }
    return Status::Ok();
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto id_of = [&](const char* key) -> Result<int32_t> {
      if (!j.contains(key) || !j[key].is_array() || j[key].size() != 2 ||
          !j[key][1].is_number_integer()) {
        return InvalidArgument("post_processor {}: expected \"{}\": [token, id]", type, key);
      }
      return static_cast<int32_t>(j[key][1].get<int64_t>());
    };
    ENGRAM_ASSIGN_OR_RETURN(int32_t cls, id_of("cls"));
    ENGRAM_ASSIGN_OR_RETURN(int32_t sep, id_of("sep"));
    prefix->push_back(cls);
    suffix->push_back(sep);
    return Status::Ok();
  }
  if (type == "TemplateProcessing") {
    if (!j.contains("single") || !j["single"].is_array()) {
      return InvalidArgument("post_processor TemplateProcessing: expected an array \"single\"");
    }
    const Json specials = j.value("special_tokens", Json::object());
    bool seen_sequence = false;
    for (const Json& item : j["single"]) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      if (!item.contains("SpecialToken") || !item["SpecialToken"].contains("id")) {
        return InvalidArgument("post_processor TemplateProcessing: bad item {}", item.dump());
      }
      const std::string name = item["SpecialToken"]["id"].get<std::string>();
      std::vector<int32_t> ids;
      if (specials.contains(name) && specials[name].contains("ids")) {
        for (const Json& v : specials[name]["ids"]) ids.push_back(v.get<int32_t>());
      } else if (auto it = ids_of.find(name); it != ids_of.end()) {
        ids.push_back(it->second);
      } else {
        return InvalidArgument("post_processor TemplateProcessing: unknown special token \"{}\"",
                               name);
      }
      auto& dst = seen_sequence ? *suffix : *prefix;
      dst.insert(dst.end(), ids.begin(), ids.end());
    }
    return Status::Ok();
  }
  return Unimplemented(
      "post_processor type \"{}\" is not supported (supported: ByteLevel, TemplateProcessing, "
      "BertProcessing, RobertaProcessing, Sequence)",
      type);
}

// bos_token / eos_token of a tokenizer_config.json: a string or {"content": ...}.
std::string ConfigToken(const Json& cfg, const char* key) {
  if (!cfg.is_object() || !cfg.contains(key)) return {};
  const Json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return {};
}

// The first of `names` that is a token of `ids_of`, or -1.
int32_t FirstKnown(const std::unordered_map<std::string, int32_t>& ids_of,
                   std::initializer_list<std::string_view> names) {
  for (std::string_view n : names) {
    if (auto it = ids_of.find(std::string(n)); it != ids_of.end()) return it->second;
  }
  return -1;
}

// Build, with nlohmann's type errors (a field of the wrong JSON type) as INVALID_ARGUMENT.
template <typename BuildFn>
Result<Tokenizer> Guarded(BuildFn build) {
  try {
    return build();
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument("a field has the wrong type: {}", e.what());
  }
}

}  // namespace

Result<Tokenizer> Tokenizer::Load(const std::string& path, const TokenizerOptions& options) {
  ENGRAM_ASSIGN_OR_RETURN(Json root, ReadJsonFile(path, kMaxTokenizerFileBytes, "tokenizer"));
  Json config;
  const auto cfg_path = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (std::filesystem::exists(cfg_path, ec)) {
    ENGRAM_ASSIGN_OR_RETURN(
        config, ReadJsonFile(cfg_path.string(), kMaxSidecarFileBytes, "tokenizer config"));
  }
  auto t = Guarded([&] { return Build(root, options, config); });
  if (!t.ok()) return t.status().WithContext(path);
  return t;
}

Result<Tokenizer> Tokenizer::FromJson(std::string_view json, const TokenizerOptions& options,
                                      const std::string& source) {
  ENGRAM_ASSIGN_OR_RETURN(Json root, ParseJson(json, source));
  auto t = Guarded([&] { return Build(root, options, Json()); });
  if (!t.ok()) return t.status().WithContext(source);
  return t;
}

Result<Tokenizer> Tokenizer::Build(const Json& root, const TokenizerOptions& options,
                                   const Json& config) {
  if (!root.is_object()) return InvalidArgument("expected a JSON object");
  auto model_it = root.find("model");
  if (model_it == root.end() || !model_it->is_object()) {
    return InvalidArgument("missing \"model\" (expected an object with \"type\": \"BPE\")");
  }
  const std::string type = model_it->value("type", std::string());
  if (type.empty() && !model_it->contains("merges")) {
    return InvalidArgument("model: missing \"type\"");
  }
  if (!type.empty() && type != "BPE") {
    return Unimplemented("model type \"{}\" is not supported (only BPE)", type);
  }
  ENGRAM_ASSIGN_OR_RETURN(BpeModel model, BpeModel::FromJson(*model_it));
  auto impl = std::make_shared<Impl>(std::move(model));

  const Json null_json;
  auto field = [&](const char* key) -> const Json& {
    auto it = root.find(key);
    return it == root.end() ? null_json : *it;
  };
  ENGRAM_ASSIGN_OR_RETURN(impl->normalizer, TextNormalizer::FromJson(field("normalizer")));
  ENGRAM_ASSIGN_OR_RETURN(impl->pre_tokenizer, PreTokenizer::FromJson(field("pre_tokenizer")));
  ENGRAM_ASSIGN_OR_RETURN(impl->decoder, TokenDecoder::FromJson(field("decoder")));
  const bool byte_level_decoder = impl->decoder.kind() == TokenDecoder::Kind::kByteLevel;
  impl->separator = impl->decoder.kind() == TokenDecoder::Kind::kNone ? " " : "";

  ENGRAM_ASSIGN_OR_RETURN(std::vector<AddedToken> added, ParseAddedTokens(field("added_tokens")));
  int32_t limit = impl->model.id_limit();
  for (const AddedToken& t : added) {
    if (t.id < 0 || t.id >= kMaxVocab) {
      return InvalidArgument("added_tokens: \"{}\" has id {}, expected an id in [0, {})", t.content,
                             t.id, kMaxVocab);
    }
    limit = std::max(limit, t.id + 1);
    impl->added_by_content.try_emplace(t.content, t.id);
  }
  const TextNormalizer& normalizer = impl->normalizer;
  impl->added = AddedVocabulary(std::move(added), [&normalizer](const std::string& content) {
    auto n = normalizer.Apply(content);
    return n.ok() ? *n : content;
  });

  // Per-id tables: added tokens take precedence over the model's vocab (as HF's id_to_token).
  const auto n = static_cast<size_t>(limit);
  impl->token.assign(n, std::string_view());
  impl->known.assign(n, 0);
  impl->special.assign(n, 0);
  impl->bytes.assign(n, std::string());
  for (int32_t id = 0; id < impl->model.id_limit(); ++id) {
    const std::string_view tok = impl->model.IdToToken(id);
    if (impl->model.TokenToId(tok) != id) continue;  // a hole in the vocab's ids
    impl->token[static_cast<size_t>(id)] = tok;
    impl->known[static_cast<size_t>(id)] = 1;
  }
  for (const AddedToken& t : impl->added.tokens()) {
    impl->token[static_cast<size_t>(t.id)] = t.content;
    impl->known[static_cast<size_t>(t.id)] = 1;
    if (t.special) impl->special[static_cast<size_t>(t.id)] = 1;
  }
  const ByteLevelMap& bl = ByteLevelMap::Get();
  for (size_t id = 0; id < n; ++id) {
    const std::string_view tok = impl->token[id];
    std::string& b = impl->bytes[id];
    // HF's ByteLevel decoder: a token whose characters are not all byte-level characters
    // (e.g. "<｜User｜>") contributes its own UTF-8 bytes.
    if (!byte_level_decoder || !bl.Decode(tok, &b)) b.assign(tok);
  }

  // Token name -> id for the post-processor and BOS/EOS lookups.
  auto id_of_content = [&](std::string_view content) -> int32_t {
    if (auto it = impl->added_by_content.find(std::string(content));
        it != impl->added_by_content.end()) {
      return it->second;
    }
    return impl->model.TokenToId(content);
  };
  std::unordered_map<std::string, int32_t> specials;
  for (const AddedToken& t : impl->added.tokens()) specials.try_emplace(t.content, t.id);
  ENGRAM_RETURN_IF_ERROR(
      ParsePostProcessor(field("post_processor"), specials, &impl->prefix, &impl->suffix));
  for (const std::vector<int32_t>* ids : {&impl->prefix, &impl->suffix}) {
    for (const int32_t id : *ids) {
      if (id < 0 || static_cast<size_t>(id) >= n || !impl->known[static_cast<size_t>(id)]) {
        return InvalidArgument(
            "post_processor: special token id {} is not in the vocabulary ({} ids)", id, n);
      }
    }
  }

  auto resolve = [&](const std::string& option, const char* config_key, int32_t from_template,
                     std::initializer_list<std::string_view> names) -> Result<int32_t> {
    if (!option.empty()) {
      const int32_t id = id_of_content(option);
      if (id < 0) return InvalidArgument("{} \"{}\" is not a token", config_key, option);
      return id;
    }
    const std::string from_config = ConfigToken(config, config_key);
    if (!from_config.empty() && id_of_content(from_config) >= 0) return id_of_content(from_config);
    if (from_template >= 0) return from_template;
    return FirstKnown(specials, names);
  };
  ENGRAM_ASSIGN_OR_RETURN(
      impl->bos,
      resolve(options.bos_token, "bos_token", impl->prefix.empty() ? -1 : impl->prefix.front(),
              {"<｜begin▁of▁sentence｜>", "<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"}));
  ENGRAM_ASSIGN_OR_RETURN(
      impl->eos,
      resolve(options.eos_token, "eos_token", impl->suffix.empty() ? -1 : impl->suffix.back(),
              {"<｜end▁of▁sentence｜>", "<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"}));

  if (options.add_bos.has_value()) {
    auto& pre = impl->prefix;
    if (*options.add_bos) {
      if (impl->bos < 0)
        return InvalidArgument("add_bos is set but the tokenizer has no BOS token");
      if (pre.empty() || pre.front() != impl->bos) pre.insert(pre.begin(), impl->bos);
    } else if (impl->bos >= 0) {
      pre.erase(std::remove(pre.begin(), pre.end(), impl->bos), pre.end());
    }
  }
  return Tokenizer(std::move(impl));
}

Status Tokenizer::Impl::EncodePlain(std::string_view text, bool at_start,
                                    std::deque<std::string>* arena,
                                    std::vector<std::string_view>* pieces,
                                    std::vector<int32_t>* ids) const {
  pieces->clear();
  ENGRAM_RETURN_IF_ERROR(pre_tokenizer.Split(text, pieces, arena, at_start));
  for (std::string_view p : *pieces) model.Encode(p, pre_tokenizer.byte_level(), ids);
  return Status::Ok();
}

Result<std::vector<int32_t>> Tokenizer::Encode(std::string_view text,
                                               bool add_special_tokens) const {
  const Impl& m = *impl_;
  if (const size_t bad = utf8::FirstInvalid(text); bad != utf8::kValid) {
    return InvalidArgument("invalid UTF-8 at byte offset {} (byte 0x{:02X})", bad,
                           static_cast<uint8_t>(text[bad]));
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  if (add_special_tokens) ids.insert(ids.end(), m.prefix.begin(), m.prefix.end());

  std::vector<AddedVocabulary::Segment> segments, inner;
  m.added.Split(text, /*normalized_set=*/false, &segments);
  std::deque<std::string> arena;
  std::vector<std::string_view> pieces;
  for (const auto& seg : segments) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    std::string_view plain = seg.text;
    const bool at_start = seg.text.data() == text.data();  // Metaspace's "first"
    if (!m.normalizer.identity()) {
      ENGRAM_ASSIGN_OR_RETURN(std::string normalized, m.normalizer.Apply(plain));
      arena.push_back(std::move(normalized));
      plain = arena.back();
    }
    if (!m.added.has_normalized()) {
      ENGRAM_RETURN_IF_ERROR(m.EncodePlain(plain, at_start, &arena, &pieces, &ids));
      continue;
    }
    inner.clear();
    m.added.Split(plain, /*normalized_set=*/true, &inner);
    for (const auto& sub : inner) {
      if (sub.id >= 0) {
        ids.push_back(sub.id);
      } else {
        ENGRAM_RETURN_IF_ERROR(m.EncodePlain(sub.text, at_start && sub.text.data() == plain.data(),
                                             &arena, &pieces, &ids));
      }
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), m.suffix.begin(), m.suffix.end());
  return ids;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  if (m.decoder.kind() == TokenDecoder::Kind::kChain) {
    std::vector<std::string_view> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
      if (id < 0 || static_cast<size_t>(id) >= m.known.size() ||
          !m.known[static_cast<size_t>(id)]) {
        continue;
      }
      if (skip_special_tokens && m.special[static_cast<size_t>(id)]) continue;
      tokens.push_back(m.token[static_cast<size_t>(id)]);
    }
    return m.decoder.Decode(tokens);
  }
  std::string out;
  bool first = true;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= m.known.size() || !m.known[static_cast<size_t>(id)]) {
      continue;
    }
    if (skip_special_tokens && m.special[static_cast<size_t>(id)]) continue;
    if (!first) out += m.separator;
    first = false;
    out += m.bytes[static_cast<size_t>(id)];
  }
  return out;
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->known.size()); }

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(std::string(token));
      it != impl_->added_by_content.end()) {
    return it->second;
  }
  const int32_t id = impl_->model.TokenToId(token);
  if (id < 0) return std::nullopt;
  return id;
}

std::optional<std::string_view> Tokenizer::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->known.size() ||
      !impl_->known[static_cast<size_t>(id)]) {
    return std::nullopt;
  }
  return impl_->token[static_cast<size_t>(id)];
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->special.size() &&
         impl_->special[static_cast<size_t>(id)];
}

int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
std::string_view Tokenizer::decode_separator() const { return impl_->separator; }
const TokenDecoder& Tokenizer::decoder() const { return impl_->decoder; }

}  // namespace engram
