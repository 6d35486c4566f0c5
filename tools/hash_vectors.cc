#include "hash_vectors.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/file_read.h"
#include "model/config.h"
#include "prefetch/ngram_hasher.h"

namespace engram::cli {
namespace {

using Json = nlohmann::ordered_json;

// ---- Python json.dumps formatting -------------------------------------------------------

void AppendHex4(std::string& out, uint32_t v) {
  static const char kHex[] = "0123456789abcdef";
  out += "\\u";
  for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(v >> shift) & 0xF];
}

// json.dumps(s) with ensure_ascii=True. `s` is valid UTF-8 (nlohmann checked it on parse).
void AppendPyString(std::string& out, const std::string& s) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    uint32_t cp = b;
    size_t len = 1;
    if (b >= 0xF0) {
      cp = b & 0x07u;
      len = 4;
    } else if (b >= 0xE0) {
      cp = b & 0x0Fu;
      len = 3;
    } else if (b >= 0xC0) {
      cp = b & 0x1Fu;
      len = 2;
    }
    for (size_t k = 1; k < len && i + k < s.size(); ++k) {
      cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3Fu);
    }
    i += len;
    switch (cp) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (cp >= 0x20 && cp <= 0x7E) {
          out += static_cast<char>(cp);
        } else if (cp < 0x10000) {
          AppendHex4(out, cp);
        } else {
          const uint32_t v = cp - 0x10000;
          AppendHex4(out, 0xD800 | (v >> 10));
          AppendHex4(out, 0xDC00 | (v & 0x3FF));
        }
    }
  }
  out += '"';
}

// repr(float): the shortest round-trip digits, fixed notation for decimal exponents in
// [-4, 16), else d.ddde+XX.
void AppendPyFloat(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v < 0 ? "-Infinity" : "Infinity";
    return;
  }
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // "-d.ddde+XX"
  if (sci[0] == '-') {
    out += '-';
    sci.erase(0, 1);
  }
  const size_t e_pos = sci.find('e');
  const int exp10 = std::stoi(sci.substr(e_pos + 1));
  std::string digits = sci.substr(0, e_pos);
  if (digits.size() > 1) digits.erase(1, 1);  // drop the '.'
  if (exp10 >= -4 && exp10 < 16) {
    if (exp10 < 0) {
      out += "0.";
      out.append(static_cast<size_t>(-exp10 - 1), '0');
      out += digits;
    } else {
      const size_t int_len = static_cast<size_t>(exp10) + 1;
      if (digits.size() < int_len) digits.append(int_len - digits.size(), '0');
      const std::string frac = digits.substr(int_len);
      out.append(digits, 0, int_len);
      out += '.';
      out += frac.empty() ? std::string("0") : frac;
    }
  } else {
    out += digits[0];
    if (digits.size() > 1) {
      out += '.';
      out.append(digits, 1);
    }
    out += fmt::format("e{}{:02d}", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
  }
}

void AppendPyJson(std::string& out, const Json& j) {
  switch (j.type()) {
    case Json::value_t::object: {
      out += '{';
      bool first = true;
      for (const auto& [key, value] : j.items()) {
        if (!first) out += ", ";
        first = false;
        AppendPyString(out, key);
        out += ": ";
        AppendPyJson(out, value);
      }
      out += '}';
      break;
    }
    case Json::value_t::array: {
      out += '[';
      for (size_t i = 0; i < j.size(); ++i) {
        if (i) out += ", ";
        AppendPyJson(out, j[i]);
      }
      out += ']';
      break;
    }
    case Json::value_t::string:
      AppendPyString(out, j.get_ref<const std::string&>());
      break;
    case Json::value_t::number_float:
      AppendPyFloat(out, j.get<double>());
      break;
    default:
      out += j.dump();  // integers in decimal; true, false, null
  }
}

// ---- Reading the vectors file ------------------------------------------------------------

std::string Brief(const Json& j) {
  std::string s = j.dump();
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

Result<int64_t> ToInt64(const Json& v, const std::string& what) {
  if (v.is_number_unsigned() &&
      v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return InvalidArgument("{} is {}, expected an integer below 2^63", what, Brief(v));
  }
  if (!v.is_number_integer()) {
    return InvalidArgument("{} is {}, expected an integer", what, Brief(v));
  }
  return v.get<int64_t>();
}

Result<int> ToInt(const Json& v, const std::string& what) {
  ENGRAM_ASSIGN_OR_RETURN(int64_t x, ToInt64(v, what));
  if (x < std::numeric_limits<int>::min() || x > std::numeric_limits<int>::max()) {
    return InvalidArgument("{} is {}, expected a 32-bit integer", what, x);
  }
  return static_cast<int>(x);
}

Result<std::vector<int64_t>> ToInt64List(const Json& v, const std::string& what) {
  if (!v.is_array())
    return InvalidArgument("{} is {}, expected an array of integers", what, Brief(v));
  std::vector<int64_t> out;
  for (size_t i = 0; i < v.size(); ++i) {
    ENGRAM_ASSIGN_OR_RETURN(int64_t x, ToInt64(v[i], fmt::format("{}[{}]", what, i)));
    out.push_back(x);
  }
  return out;
}

const Json* Find(const Json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

Result<const Json*> Require(const Json& obj, const char* key, const std::string& where,
                            const char* expected) {
  const Json* v = Find(obj, key);
  if (!v) {
    const std::string name = where.empty() ? fmt::format("\"{}\"", key) : where + key;
    return InvalidArgument("{} is missing, expected {}", name, expected);
  }
  return v;
}

// The reference EngramConfig keys of "config". Unknown keys are ignored.
Result<EngramConfig> ParseConfig(const Json& cfg) {
  if (!cfg.is_object()) {
    return InvalidArgument("\"config\" is {}, expected an object of EngramConfig keys", Brief(cfg));
  }
  EngramConfig c;
  const std::string where = "config.";
  ENGRAM_ASSIGN_OR_RETURN(const Json* v, Require(cfg, "engram_vocab_size", where,
                                                 "an array of max_ngram_size - 1 table sizes"));
  ENGRAM_ASSIGN_OR_RETURN(c.engram_vocab_size, ToInt64List(*v, "config.engram_vocab_size"));
  ENGRAM_ASSIGN_OR_RETURN(v, Require(cfg, "max_ngram_size", where, "an integer >= 2"));
  ENGRAM_ASSIGN_OR_RETURN(c.max_ngram_size, ToInt(*v, "config.max_ngram_size"));
  ENGRAM_ASSIGN_OR_RETURN(v, Require(cfg, "n_head_per_ngram", where, "an integer >= 1"));
  ENGRAM_ASSIGN_OR_RETURN(c.n_head_per_ngram, ToInt(*v, "config.n_head_per_ngram"));
  ENGRAM_ASSIGN_OR_RETURN(v, Require(cfg, "layer_ids", where, "an array of layer ids"));
  ENGRAM_ASSIGN_OR_RETURN(std::vector<int64_t> layers, ToInt64List(*v, "config.layer_ids"));
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i] < 0 || layers[i] > std::numeric_limits<int>::max()) {
      return InvalidArgument("config.layer_ids[{}] is {}, expected a layer id >= 0", i, layers[i]);
    }
    c.layer_ids.push_back(static_cast<int>(layers[i]));
  }
  ENGRAM_ASSIGN_OR_RETURN(v, Require(cfg, "pad_id", where, "a raw token id"));
  ENGRAM_ASSIGN_OR_RETURN(c.pad_id, ToInt64(*v, "config.pad_id"));
  ENGRAM_ASSIGN_OR_RETURN(v, Require(cfg, "seed", where, "an integer >= 0"));
  ENGRAM_ASSIGN_OR_RETURN(c.seed, ToInt64(*v, "config.seed"));
  if ((v = Find(cfg, "n_embed_per_ngram"))) {
    ENGRAM_ASSIGN_OR_RETURN(c.n_embed_per_ngram, ToInt(*v, "config.n_embed_per_ngram"));
  }
  if ((v = Find(cfg, "kernel_size"))) {
    ENGRAM_ASSIGN_OR_RETURN(c.kernel_size, ToInt(*v, "config.kernel_size"));
  }
  return c;
}

Result<CompressionMap> LoadMap(const Json& doc, const Json& cfg, const std::string& vectors_path,
                               const CompressionTableLoader& load_table) {
  int64_t vocab = 0;
  if (const Json* v = Find(cfg, "vocab_size")) {
    ENGRAM_ASSIGN_OR_RETURN(vocab, ToInt64(*v, "config.vocab_size"));
    if (vocab < 1 || vocab > ConfigLimits::kMaxVocab) {
      return InvalidArgument("config.vocab_size is {}, expected 1 to {}", vocab,
                             ConfigLimits::kMaxVocab);
    }
  }
  if (const Json* t = Find(doc, "compression_table")) {
    if (!t->is_string()) {
      return InvalidArgument("\"compression_table\" is {}, expected a file name", Brief(*t));
    }
    const std::filesystem::path table =
        std::filesystem::path(vectors_path).parent_path() / t->get<std::string>();
    return load_table ? load_table(table.string(), vocab)
                      : CompressionMap::LoadJson(table.string(), vocab);
  }
  if (vocab == 0) {
    return InvalidArgument(
        "no vocabulary size: expected \"compression_table\" (a map file relative to the vectors "
        "file) or config.vocab_size (identity map)");
  }
  return CompressionMap::Identity(vocab);
}

Result<std::vector<std::vector<int64_t>>> ParseIds(const Json& ids, const std::string& where,
                                                   const NgramHasher& hasher) {
  if (!ids.is_array()) {
    return InvalidArgument("{}.input_ids is {}, expected [B][T] arrays of token ids", where,
                           Brief(ids));
  }
  const int64_t vocab = hasher.compression().vocab_size();
  std::vector<std::vector<int64_t>> rows;
  for (size_t b = 0; b < ids.size(); ++b) {
    const std::string row_name = fmt::format("{}.input_ids[{}]", where, b);
    ENGRAM_ASSIGN_OR_RETURN(std::vector<int64_t> row, ToInt64List(ids[b], row_name));
    for (size_t t = 0; t < row.size(); ++t) {
      if (row[t] < 0 || row[t] >= vocab) {
        return OutOfRange("{}[{}] = {} is outside the vocabulary, expected a token id in [0, {})",
                          row_name, t, row[t], vocab);
      }
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

// ---- Filling in ----------------------------------------------------------------------------

Json LayerTable(const NgramHasher& hasher) {
  Json layers = Json::object();
  for (int i = 0; i < hasher.num_layers(); ++i) {
    const EngramLayerHash& l = hasher.layer(i);
    Json entry = Json::object();
    entry["multipliers"] = l.multipliers;
    entry["primes"] = l.primes;
    layers[std::to_string(l.layer_id)] = std::move(entry);
  }
  return layers;
}

Result<Json> FillCase(const Json& in, size_t index, const NgramHasher& hasher) {
  std::string where = fmt::format("cases[{}]", index);
  if (!in.is_object()) return InvalidArgument("{} is {}, expected an object", where, Brief(in));
  const Json* name = Find(in, "name");
  if (name && !name->is_string()) {
    return InvalidArgument("{}.name is {}, expected a string", where, Brief(*name));
  }
  if (name) where += fmt::format(" (\"{}\")", name->get<std::string>());
  ENGRAM_ASSIGN_OR_RETURN(const Json* ids_json,
                          Require(in, "input_ids", where + ".", "[B][T] arrays of token ids"));
  ENGRAM_ASSIGN_OR_RETURN(auto rows, ParseIds(*ids_json, where, hasher));

  Json compressed = Json::array();
  for (const auto& row : rows) {
    Json r = Json::array();
    for (int64_t id : row) r.push_back(hasher.compression()(id));
    compressed.push_back(std::move(r));
  }
  const size_t H = static_cast<size_t>(hasher.num_heads());
  Json hashes = Json::object();
  std::vector<int64_t> buf;
  for (int i = 0; i < hasher.num_layers(); ++i) {
    Json per_row = Json::array();
    for (const auto& row : rows) {
      buf.resize(row.size() * H);
      hasher.Hash(i, {}, row, /*add_offsets=*/false, buf.data());
      Json per_t = Json::array();
      for (size_t t = 0; t < row.size(); ++t) {
        per_t.push_back(std::vector<int64_t>(buf.begin() + t * H, buf.begin() + (t + 1) * H));
      }
      per_row.push_back(std::move(per_t));
    }
    hashes[std::to_string(hasher.layer(i).layer_id)] = std::move(per_row);
  }

  Json out = Json::object();
  if (name) out["name"] = *name;
  out["input_ids"] = *ids_json;
  out["compressed_ids"] = std::move(compressed);
  out["hashes"] = std::move(hashes);
  for (const auto& [key, value] : in.items()) {
    if (!out.contains(key)) out[key] = value;  // other keys keep their values, after ours
  }
  return out;
}

}  // namespace

Result<std::string> FillVectors(std::string_view text, const std::string& origin,
                                const CompressionTableLoader& load_table) {
  const std::string& path = origin;
  if (JsonNestingDepth(text, kMaxJsonDepth) > kMaxJsonDepth) {
    return InvalidArgument("{}: not valid JSON (nested deeper than {} levels)", path,
                           kMaxJsonDepth);
  }
  Json doc;
  try {
    doc = Json::parse(text);
  } catch (const Json::exception& e) {
    return InvalidArgument(
        "{}: not valid JSON ({}); expected a vectors object like "
        "tests/data/demo_default_config.json",
        path, e.what());
  }
  if (!doc.is_object()) {
    return InvalidArgument("{}: top level is {}, expected an object with \"config\" and \"cases\"",
                           path, Brief(doc));
  }
  auto with_path = [&](const Status& st) { return st.WithContext(path); };
  auto cfg_json = Require(doc, "config", "", "an object of EngramConfig keys");
  if (!cfg_json.ok()) return with_path(cfg_json.status());
  auto config = ParseConfig(**cfg_json);
  if (!config.ok()) return with_path(config.status());
  auto map = LoadMap(doc, **cfg_json, path, load_table);
  if (!map.ok()) return with_path(map.status());
  auto hasher = NgramHasher::Create(*config, std::move(map).value());
  if (!hasher.ok()) return with_path(hasher.status());
  auto cases = Require(doc, "cases", "", "an array of {\"name\", \"input_ids\"} objects");
  if (!cases.ok()) return with_path(cases.status());
  if (!(*cases)->is_array()) {
    return with_path(InvalidArgument("\"cases\" is {}, expected an array", Brief(**cases)));
  }

  Json out = Json::object();
  for (const char* key : {"about", "compression_table", "config"}) {
    if (const Json* v = Find(doc, key)) out[key] = *v;
  }
  out["compressed_vocab_size"] = hasher->compression().num_compressed();
  out["pad_id_compressed"] = hasher->compressed_pad_id();
  out["layers"] = LayerTable(*hasher);
  Json filled = Json::array();
  for (size_t i = 0; i < (*cases)->size(); ++i) {
    auto c = FillCase((**cases)[i], i, *hasher);
    if (!c.ok()) return with_path(c.status());
    filled.push_back(std::move(c).value());
  }
  out["cases"] = std::move(filled);
  for (const auto& [key, value] : doc.items()) {
    if (!out.contains(key)) out[key] = value;
  }
  std::string s;
  AppendPyJson(s, out);
  return s;
}

}  // namespace engram::cli
