#include "model/model_files.h"

#include "model/weights.h"
#include "text/compression_builder.h"
#include "text/tokenizer.h"

#include <charconv>
#include <cstdlib>
#include <filesystem>

#include "model/synth.h"

namespace engram {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kSynthPrefix = "synth:";

// Parses "PRESET?key=value&key=value" into SynthOptions.
Result<SynthOptions> ParseSynthSpec(const std::string& spec) {
  std::string rest = spec.substr(kSynthPrefix.size());
  SynthOptions o;
  o.progress = false;
  const size_t q = rest.find('?');
  o.preset = rest.substr(0, q);
  if (q == std::string::npos) return o;
  std::string query = rest.substr(q + 1);
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    if (amp == std::string::npos) amp = query.size();
    const std::string item = query.substr(pos, amp - pos);
    pos = amp + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos) {
      return InvalidArgument("{}: parameter \"{}\" has no value (expected key=value)", spec, item);
    }
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "seed") {
      uint64_t seed = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), seed);
      if (value.empty() || ec != std::errc() || p != value.data() + value.size()) {
        return InvalidArgument("{}: seed \"{}\" is not a non-negative integer", spec, value);
      }
      o.seed = seed;
    } else if (key == "dtype") {
      auto dt = ParseSynthDType(value);
      if (!dt.ok()) return dt.status().WithContext(spec);
      o.dtype = *dt;
    } else if (key == "tables") {
      auto dt = ParseSynthTableDType(value);
      if (!dt.ok()) return dt.status().WithContext(spec);
      o.table_dtype = *dt;
    } else if (key == "table_gb") {
      char* end = nullptr;
      const double gb = std::strtod(value.c_str(), &end);
      if (value.empty() || end != value.c_str() + value.size() || !(gb > 0)) {
        return InvalidArgument("{}: table_gb \"{}\" is not a positive number", spec, value);
      }
      o.table_gb = gb;
    } else if (key == "tokenizer") {
      o.tokenizer_path = value;
    } else {
      return InvalidArgument(
          "{}: unknown parameter \"{}\" (accepted: seed, dtype, tables, table_gb, tokenizer)", spec,
          key);
    }
  }
  return o;
}

// `map` extended to cover [0, vocab_size): ids beyond the map (a tokenizer smaller than the
// padded embedding) read the compressed pad id. `path` names the map's origin in messages.
Result<CompressionMap> CoverVocab(CompressionMap map, const std::string& path,
                                  const ModelConfig& config) {
  const int64_t vocab = config.vocab_size;
  if (map.vocab_size() == vocab) return map;
  if (map.vocab_size() > vocab) {
    return InvalidArgument("{}: lookup has {} entries, more than the model's vocab_size = {}", path,
                           map.vocab_size(), vocab);
  }
  std::vector<int64_t> lookup = map.lookup();
  int64_t filler = 0;
  if (config.engram && config.engram->pad_id < map.vocab_size()) {
    filler = map(config.engram->pad_id);
  }
  lookup.resize(static_cast<size_t>(vocab), filler);
  auto extended = CompressionMap::FromLookup(std::move(lookup), map.num_compressed());
  if (!extended.ok()) return extended.status().WithContext(path);
  return extended;
}

// A compression map and where it came from, for messages.
struct Compression {
  CompressionMap map;
  std::string origin;  // "the compression map built from PATH", ...
};

// The model's compression map: engram_compression.json when present, else computed natively
// from the tokenizer by the reference's rules, else the identity.
Result<Compression> CompressionFor(const ModelConfig& config, const std::string& map_path,
                                   const std::string& tokenizer_path) {
  if (!map_path.empty()) {
    ENGRAM_ASSIGN_OR_RETURN(CompressionMap map, CompressionMap::LoadJson(map_path, 0));
    ENGRAM_ASSIGN_OR_RETURN(map, CoverVocab(std::move(map), map_path, config));
    return Compression{std::move(map), "the compression map " + map_path};
  }
  if (!tokenizer_path.empty() && config.engram) {
    ENGRAM_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::Load(tokenizer_path));
    auto map = BuildCompressionMap(tok);
    if (!map.ok()) return map.status().WithContext(tokenizer_path);
    ENGRAM_ASSIGN_OR_RETURN(CompressionMap covered,
                            CoverVocab(std::move(map).value(), tokenizer_path, config));
    return Compression{std::move(covered), "the compression map built from " + tokenizer_path};
  }
  return Compression{CompressionMap::Identity(config.vocab_size),
                     "the identity compression (no tokenizer.json or engram_compression.json: "
                     "one id per token of vocab_size)"};
}

// V4.1 names its compressed vocabulary: the multipliers' bound derives from it (NgramHasher
// takes the map's num_compressed), so a map of another size would hash every n-gram to other
// rows than the checkpoint was trained with. `config_source` names config.json.
Status CheckCompressedVocab(const ModelConfig& config, const std::string& config_source,
                            const Compression& c) {
  if (!config.engram || !config.engram->v41()) return Status::Ok();
  const int64_t want = config.engram->compressed_vocab_size;
  if (c.map.num_compressed() == want) return Status::Ok();
  return InvalidArgument(
      "{}: engram_compressed_vocab_size is {}, but {} has {} ids (the Engram hashes derive "
      "from the compressed vocabulary: the two must agree)",
      config_source, want, c.origin, c.map.num_compressed());
}

}  // namespace

Result<ModelFiles> OpenModel(const std::string& spec) {
  ModelFiles m;
  m.source = spec;
  if (spec.rfind(kSynthPrefix, 0) == 0) {
    ENGRAM_ASSIGN_OR_RETURN(SynthOptions options, ParseSynthSpec(spec));
    ENGRAM_ASSIGN_OR_RETURN(SynthModel synth, SynthesizeInMemory(options));
    m.config = std::move(synth.config);
    m.store = std::move(synth.store);
    m.tokenizer_path = std::move(synth.tokenizer_path);
    ENGRAM_ASSIGN_OR_RETURN(m.chat_template, ChatTemplateBeside(m.tokenizer_path));
    ENGRAM_ASSIGN_OR_RETURN(Compression c, CompressionFor(m.config, "", m.tokenizer_path));
    ENGRAM_RETURN_IF_ERROR(CheckCompressedVocab(m.config, spec, c));
    m.compression = std::move(c.map);
    return m;
  }
  std::error_code ec;
  if (!fs::is_directory(spec, ec)) {
    return NotFound("{}: not a model directory (nor synth:PRESET)", spec);
  }
  m.dir = spec;
  const fs::path dir(spec);
  const std::string config_path = (dir / "config.json").string();
  ENGRAM_ASSIGN_OR_RETURN(m.config, ModelConfig::Load(config_path));
  ENGRAM_ASSIGN_OR_RETURN(m.store, TensorStore::OpenDirectory(spec));
  ENGRAM_RETURN_IF_ERROR(CheckExpectedTensors(m.config, m.store));
  const fs::path tokenizer = dir / "tokenizer.json";
  if (fs::exists(tokenizer, ec)) m.tokenizer_path = tokenizer.string();
  ENGRAM_ASSIGN_OR_RETURN(m.chat_template, ChatTemplateBeside(m.tokenizer_path));
  const fs::path compression = dir / "engram_compression.json";
  ENGRAM_ASSIGN_OR_RETURN(
      Compression c,
      CompressionFor(m.config, fs::exists(compression, ec) ? compression.string() : "",
                     m.tokenizer_path));
  ENGRAM_RETURN_IF_ERROR(CheckCompressedVocab(m.config, config_path, c));
  m.compression = std::move(c.map);
  return m;
}

Result<std::shared_ptr<const ChatTemplate>> ChatTemplateBeside(const std::string& tokenizer_path) {
  if (tokenizer_path.empty()) return std::shared_ptr<const ChatTemplate>();
  const std::string cfg =
      (fs::path(tokenizer_path).parent_path() / "tokenizer_config.json").string();
  ENGRAM_ASSIGN_OR_RETURN(std::optional<ChatTemplate> t, ChatTemplate::FromTokenizerConfig(cfg));
  if (!t) return std::shared_ptr<const ChatTemplate>();
  return std::make_shared<const ChatTemplate>(std::move(*t));
}

}  // namespace engram
