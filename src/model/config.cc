#include "model/config.h"

#include <fmt/ranges.h>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "common/file_read.h"
#include "model/engram_geometry.h"

namespace engram {
namespace {

using json = nlohmann::json;

// The V4.1 gate's RMS eps (DESIGN.md "Engram semantics").
constexpr double kV41GateEps = 1e-20;

// Short description of a JSON value for messages: its type and (abbreviated) text.
std::string Describe(const json& v) {
  std::string text = v.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return fmt::format("{} {}", v.type_name(), text);
}

// Reads the fields of one JSON object, prefixing every error with the file and the key path.
class FieldReader {
 public:
  FieldReader(const json& obj, std::string source, std::string prefix)
      : obj_(obj), source_(std::move(source)), prefix_(std::move(prefix)) {}

  std::string Key(const std::string& key) const { return prefix_ + key; }

  // Present and not null.
  bool Has(const std::string& key) const {
    auto it = obj_.find(key);
    return it != obj_.end() && !it->is_null();
  }

  Status Missing(const std::string& key) const {
    return InvalidArgument("{}: missing required key \"{}\"", source_, Key(key));
  }

  Status WrongType(const std::string& key, const json& v, const char* expected) const {
    return InvalidArgument("{}: key \"{}\" must be {}, found {}", source_, Key(key), expected,
                           Describe(v));
  }

  // Integer keys: `required` ones must be present; absent optional ones keep *out.
  Status Int(const std::string& key, int64_t* out, bool required = false) const {
    if (!Has(key)) return required ? Missing(key) : Status::Ok();
    const json& v = obj_.at(key);
    if (!v.is_number_integer()) return WrongType(key, v, "an integer");
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t{INT64_MAX}) {
      return InvalidArgument("{}: key \"{}\" = {} is out of range", source_, Key(key),
                             v.get<uint64_t>());
    }
    *out = v.get<int64_t>();
    return Status::Ok();
  }

  Status Int(const std::string& key, int* out, bool required = false) const {
    int64_t v = *out;
    ENGRAM_RETURN_IF_ERROR(Int(key, &v, required));
    if (v < INT32_MIN || v > INT32_MAX) {
      return InvalidArgument("{}: key \"{}\" = {} is out of range", source_, Key(key), v);
    }
    *out = static_cast<int>(v);
    return Status::Ok();
  }

  Status Double(const std::string& key, double* out, bool required = false) const {
    if (!Has(key)) return required ? Missing(key) : Status::Ok();
    const json& v = obj_.at(key);
    if (!v.is_number()) return WrongType(key, v, "a number");
    *out = v.get<double>();
    return Status::Ok();
  }

  Status Bool(const std::string& key, bool* out) const {
    if (!Has(key)) return Status::Ok();
    const json& v = obj_.at(key);
    if (!v.is_boolean()) return WrongType(key, v, "a boolean");
    *out = v.get<bool>();
    return Status::Ok();
  }

  Status String(const std::string& key, std::string* out) const {
    if (!Has(key)) return Status::Ok();
    const json& v = obj_.at(key);
    if (!v.is_string()) return WrongType(key, v, "a string");
    *out = v.get<std::string>();
    return Status::Ok();
  }

  // An integer array; `required` ones must be present.
  template <typename T>
  Status IntList(const std::string& key, std::vector<T>* out, bool required) const {
    if (!Has(key)) return required ? Missing(key) : Status::Ok();
    const json& v = obj_.at(key);
    if (!v.is_array()) return WrongType(key, v, "an array of integers");
    std::vector<T> list;
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_number_integer()) {
        return WrongType(fmt::format("{}[{}]", key, i), v[i], "an integer");
      }
      const bool too_big =
          v[i].is_number_unsigned() && v[i].get<uint64_t>() > static_cast<uint64_t>(INT64_MAX);
      const int64_t x = too_big ? 0 : v[i].get<int64_t>();
      if (too_big || x < std::numeric_limits<T>::min() || x > std::numeric_limits<T>::max()) {
        return InvalidArgument("{}: key \"{}[{}]\" = {} is out of range", source_, Key(key), i,
                               v[i].dump());
      }
      list.push_back(static_cast<T>(x));
    }
    *out = std::move(list);
    return Status::Ok();
  }

 private:
  const json& obj_;
  std::string source_;
  std::string prefix_;
};

Status Positive(const std::string& source, const std::string& key, double value) {
  if (value > 0) return Status::Ok();
  return InvalidArgument("{}: key \"{}\" = {} must be positive", source, key, value);
}

Status PositiveInt(const std::string& source, const std::string& key, int64_t value) {
  if (value > 0) return Status::Ok();
  return InvalidArgument("{}: key \"{}\" = {} must be positive", source, key, value);
}

// value in [1, max]: sizes are bounded before anything is allocated from them. The bounds are
// far above every released model's (config.h, "Limits").
Status SizeInRange(const std::string& source, const std::string& key, int64_t value, int64_t max) {
  ENGRAM_RETURN_IF_ERROR(PositiveInt(source, key, value));
  if (value <= max) return Status::Ok();
  return InvalidArgument("{}: key \"{}\" = {} is larger than engramd supports (at most {})", source,
                         key, value, max);
}

Result<RopeScaling> ParseRopeScaling(const json& j, const std::string& source) {
  if (!j.is_object()) {
    return InvalidArgument("{}: key \"rope_scaling\" must be null or an object, found {}", source,
                           Describe(j));
  }
  FieldReader r(j, source, "rope_scaling.");
  RopeScaling rs;
  std::string type;
  ENGRAM_RETURN_IF_ERROR(r.String("rope_type", &type));
  if (type.empty()) ENGRAM_RETURN_IF_ERROR(r.String("type", &type));
  if (type.empty()) return r.Missing("rope_type");
  if (type != "default" && type != "llama3" && type != "linear") {
    return InvalidArgument(
        "{}: key \"rope_scaling.rope_type\" = \"{}\" is not supported (expected default, "
        "llama3 or linear)",
        source, type);
  }
  rs.rope_type = type;
  ENGRAM_RETURN_IF_ERROR(r.Double("factor", &rs.factor, /*required=*/type != "default"));
  ENGRAM_RETURN_IF_ERROR(r.Double("low_freq_factor", &rs.low_freq_factor));
  ENGRAM_RETURN_IF_ERROR(r.Double("high_freq_factor", &rs.high_freq_factor));
  ENGRAM_RETURN_IF_ERROR(
      r.Int("original_max_position_embeddings", &rs.original_max_position_embeddings));
  return rs;
}

Result<EngramConfig> ParseEngram(const json& j, const std::string& source) {
  if (!j.is_object()) {
    return InvalidArgument("{}: key \"engram\" must be an object, found {}", source, Describe(j));
  }
  FieldReader r(j, source, "engram.");
  EngramConfig e;
  ENGRAM_RETURN_IF_ERROR(r.IntList("engram_vocab_size", &e.engram_vocab_size, true));
  ENGRAM_RETURN_IF_ERROR(r.Int("max_ngram_size", &e.max_ngram_size));
  ENGRAM_RETURN_IF_ERROR(r.Int("n_embed_per_ngram", &e.n_embed_per_ngram));
  ENGRAM_RETURN_IF_ERROR(r.Int("n_head_per_ngram", &e.n_head_per_ngram));
  ENGRAM_RETURN_IF_ERROR(r.IntList("layer_ids", &e.layer_ids, true));
  ENGRAM_RETURN_IF_ERROR(r.Int("pad_id", &e.pad_id));
  ENGRAM_RETURN_IF_ERROR(r.Int("seed", &e.seed));
  ENGRAM_RETURN_IF_ERROR(r.Int("kernel_size", &e.kernel_size));
  ENGRAM_RETURN_IF_ERROR(r.Double("norm_eps", &e.norm_eps));
  ENGRAM_RETURN_IF_ERROR(r.Double("conv_norm_eps", &e.conv_norm_eps));
  ENGRAM_RETURN_IF_ERROR(r.Bool("short_conv", &e.short_conv));
  return e;
}

// DeepSeek-V4.1's flat top-level keys (DESIGN.md "Model directory"). engram_layer_ids is
// the one whose presence selects the layout; the other keys without it are an error naming
// it.
constexpr const char* kV41Keys[] = {
    "engram_layer_ids",
    "engram_max_ngram_size",
    "engram_vocab_size",
    "engram_n_heads",
    "engram_head_dim",
    "engram_pad_token_id",
    "engram_compressed_vocab_size",
    "engram_num_embeddings",
};

// The first V4.1 flat key present in `j`, or nullptr.
const char* FirstV41Key(const json& j) {
  for (const char* key : kV41Keys) {
    auto it = j.find(key);
    if (it != j.end() && !it->is_null()) return key;
  }
  return nullptr;
}

Result<EngramConfig> ParseV41(const json& j, const std::string& source) {
  FieldReader r(j, source, "");
  EngramConfig e;
  e.variant = EngramVariant::kV41;
  // Every size is bounded as it is read: engram_max_ngram_size sizes a vector, the product of
  // heads and head_dim is an int.
  ENGRAM_RETURN_IF_ERROR(r.IntList("engram_layer_ids", &e.layer_ids, true));
  ENGRAM_RETURN_IF_ERROR(r.Int("engram_max_ngram_size", &e.max_ngram_size, true));
  if (e.max_ngram_size < 2) {
    return InvalidArgument("{}: key \"engram_max_ngram_size\" = {} must be at least 2", source,
                           e.max_ngram_size);
  }
  ENGRAM_RETURN_IF_ERROR(
      SizeInRange(source, "engram_max_ngram_size", e.max_ngram_size, ConfigLimits::kMaxNgramSize));
  int64_t vocab = 0;
  ENGRAM_RETURN_IF_ERROR(r.Int("engram_vocab_size", &vocab, true));
  if (vocab < 2) {
    return InvalidArgument("{}: key \"engram_vocab_size\" = {} must be at least 2", source, vocab);
  }
  ENGRAM_RETURN_IF_ERROR(
      SizeInRange(source, "engram_vocab_size", vocab, ConfigLimits::kMaxEngramVocab));
  e.engram_vocab_size.assign(static_cast<size_t>(e.max_ngram_size - 1), vocab);
  int64_t heads = 0, head_dim = 0;
  ENGRAM_RETURN_IF_ERROR(r.Int("engram_n_heads", &heads, true));
  ENGRAM_RETURN_IF_ERROR(
      SizeInRange(source, "engram_n_heads", heads, ConfigLimits::kMaxEngramHeads));
  ENGRAM_RETURN_IF_ERROR(r.Int("engram_head_dim", &head_dim, true));
  ENGRAM_RETURN_IF_ERROR(
      SizeInRange(source, "engram_head_dim", head_dim, ConfigLimits::kMaxEngramEmbed));
  if (heads * head_dim > ConfigLimits::kMaxEngramEmbed) {
    return InvalidArgument(
        "{}: keys \"engram_n_heads\" x \"engram_head_dim\" = {} x {} = {} is larger than engramd "
        "supports (at most {} values per n-gram order)",
        source, heads, head_dim, heads * head_dim, ConfigLimits::kMaxEngramEmbed);
  }
  e.n_head_per_ngram = static_cast<int>(heads);
  e.n_embed_per_ngram = static_cast<int>(heads * head_dim);
  ENGRAM_RETURN_IF_ERROR(r.Int("engram_pad_token_id", &e.pad_id, true));
  ENGRAM_RETURN_IF_ERROR(r.Int("engram_compressed_vocab_size", &e.compressed_vocab_size, true));
  ENGRAM_RETURN_IF_ERROR(
      PositiveInt(source, "engram_compressed_vocab_size", e.compressed_vocab_size));
  if (r.Has("engram_num_embeddings")) {
    ENGRAM_RETURN_IF_ERROR(r.Int("engram_num_embeddings", &e.num_embeddings, true));
    ENGRAM_RETURN_IF_ERROR(PositiveInt(source, "engram_num_embeddings", e.num_embeddings));
  }
  ENGRAM_RETURN_IF_ERROR(r.Int("hc_mult", &e.hc_mult));
  // The V4.1 module: the reference's hashing with seed 0, no short conv, gate eps 1e-20.
  e.seed = 0;
  e.short_conv = false;
  e.norm_eps = kV41GateEps;
  return e;
}

// Resolves model_type from "model_type" or, without it, from "architectures".
constexpr int64_t kMaxWeightBlock = 1 << 16;

// "quantization_config" (config.h, WeightQuantization).
Result<WeightQuantization> ParseQuantization(const json& j, const std::string& source) {
  const std::string prefix = "quantization_config.";
  if (!j.is_object()) {
    return InvalidArgument("{}: key \"quantization_config\" must be an object, found {}", source,
                           Describe(j));
  }
  FieldReader r(j, source, prefix);
  WeightQuantization q;
  if (!r.Has("quant_method")) return r.Missing("quant_method");
  ENGRAM_RETURN_IF_ERROR(r.String("quant_method", &q.quant_method));
  if (q.quant_method != "fp8" && q.quant_method != "engram_int8") {
    return Unimplemented(
        "{}: quantization_config.quant_method \"{}\" is not supported (expected \"fp8\", "
        "Hugging Face's fine-grained FP8 with weight_block_size, or \"engram_int8\", what "
        "engram pack quantize --weights int8 writes)",
        source, q.quant_method);
  }
  if (q.fp8() && r.Has("fmt")) {
    std::string fmt_name;
    ENGRAM_RETURN_IF_ERROR(r.String("fmt", &fmt_name));
    if (fmt_name != "e4m3") {
      return Unimplemented(
          "{}: quantization_config.fmt \"{}\" is not supported (expected \"e4m3\")", source,
          fmt_name);
    }
  }
  std::string activation_scheme = "dynamic";
  ENGRAM_RETURN_IF_ERROR(r.String("activation_scheme", &activation_scheme));
  if (activation_scheme != "dynamic") {
    return Unimplemented(
        "{}: quantization_config.activation_scheme \"{}\" is not supported (expected "
        "\"dynamic\": activations stay F32, or are quantized per token on the fly)",
        source, activation_scheme);
  }
  if (!r.Has("weight_block_size")) {
    if (q.fp8()) {
      return Unimplemented(
          "{}: quantization_config has quant_method \"fp8\" without weight_block_size: "
          "per-tensor FP8 (weight_scale) is not supported, only block-wise FP8 with "
          "weight_scale_inv (e.g. \"weight_block_size\": [128, 128])",
          source);
    }
    return r.Missing("weight_block_size");
  }
  std::vector<int64_t> block;
  ENGRAM_RETURN_IF_ERROR(r.IntList("weight_block_size", &block, true));
  if (block.size() != 2) {
    return InvalidArgument(
        "{}: key \"quantization_config.weight_block_size\" must hold 2 integers [rows, "
        "columns], found {}",
        source, block.size());
  }
  ENGRAM_RETURN_IF_ERROR(
      SizeInRange(source, prefix + "weight_block_size[0]", block[0], kMaxWeightBlock));
  ENGRAM_RETURN_IF_ERROR(
      SizeInRange(source, prefix + "weight_block_size[1]", block[1], kMaxWeightBlock));
  q.block_n = block[0];
  q.block_k = block[1];
  if (!q.fp8() && (q.block_n != 1 || q.block_k != 32)) {
    return Unimplemented(
        "{}: quantization_config.weight_block_size [{}, {}] is not supported with "
        "quant_method \"engram_int8\" (expected [1, 32])",
        source, q.block_n, q.block_k);
  }
  if (r.Has("modules_to_not_convert")) {
    const json& m = j.at("modules_to_not_convert");
    if (!m.is_array()) return r.WrongType("modules_to_not_convert", m, "an array of strings");
    for (size_t i = 0; i < m.size(); ++i) {
      if (!m[i].is_string()) {
        return r.WrongType(fmt::format("modules_to_not_convert[{}]", i), m[i], "a string");
      }
      q.modules_to_not_convert.push_back(m[i].get<std::string>());
    }
  }
  return q;
}

Result<std::string> ParseModelType(const FieldReader& r, const json& j, const std::string& source) {
  std::string type;
  ENGRAM_RETURN_IF_ERROR(r.String("model_type", &type));
  if (!type.empty()) {
    if (type != "llama" && type != "qwen2") {
      return InvalidArgument(
          "{}: key \"model_type\" = \"{}\" is not supported (expected llama or qwen2)", source,
          type);
    }
    return type;
  }
  if (!r.Has("architectures")) return std::string("llama");
  const json& a = j.at("architectures");
  if (!a.is_array()) return r.WrongType("architectures", a, "an array of strings");
  for (const json& name : a) {
    if (name == "LlamaForCausalLM") return std::string("llama");
    if (name == "Qwen2ForCausalLM") return std::string("qwen2");
  }
  return InvalidArgument(
      "{}: architectures {} are not supported (expected model_type llama or qwen2, or "
      "architectures LlamaForCausalLM or Qwen2ForCausalLM)",
      source, a.dump());
}

// The config.json key each EngramConfig field comes from, for messages.
struct EngramKeys {
  std::string max_ngram_size, engram_vocab_size, n_embed, n_head, layer_ids, pad_id;
};

EngramKeys KeysOf(const EngramConfig& e) {
  if (e.v41()) {
    return {"engram_max_ngram_size", "engram_vocab_size", "engram_head_dim",
            "engram_n_heads",        "engram_layer_ids",  "engram_pad_token_id"};
  }
  return {"engram.max_ngram_size",   "engram.engram_vocab_size", "engram.n_embed_per_ngram",
          "engram.n_head_per_ngram", "engram.layer_ids",         "engram.pad_id"};
}

// The name of entry i of the per-order vocab sizes: V4.1 has one int for all orders.
std::string VocabKey(const EngramConfig& e, const EngramKeys& k, size_t i) {
  return e.v41() ? k.engram_vocab_size : fmt::format("{}[{}]", k.engram_vocab_size, i);
}

Status HcMultUnsupported(const std::string& src, int64_t hc_mult) {
  return InvalidArgument(
      "{}: key \"hc_mult\" = {} is not supported: engramd runs without hyper-connections "
      "(hc_mult = 1 only)",
      src, hc_mult);
}

// What only the V4.1 layout sets (and only it can round-trip through ToJson).
Status ValidateVariant(const ModelConfig& c, const EngramConfig& e, const std::string& src) {
  if (e.hc_mult != 1) return HcMultUnsupported(src, e.hc_mult);
  if (!e.v41()) {
    if (e.compressed_vocab_size != 0 || e.num_embeddings != 0) {
      return InvalidArgument(
          "{}: engram_compressed_vocab_size = {} and engram_num_embeddings = {} belong to the "
          "DeepSeek-V4.1 layout, not to the \"engram\" object",
          src, e.compressed_vocab_size, e.num_embeddings);
    }
    return Status::Ok();
  }
  for (int64_t v : e.engram_vocab_size) {
    if (v != e.engram_vocab_size.front()) {
      return InvalidArgument(
          "{}: key \"engram_vocab_size\": the V4.1 layout has one prime-search start for every "
          "order, found {}",
          src, fmt::join(e.engram_vocab_size, ", "));
    }
  }
  if (e.seed != 0 || e.short_conv || e.norm_eps != kV41GateEps) {
    return InvalidArgument(
        "{}: the DeepSeek-V4.1 Engram has seed 0, no short conv and gate eps 1e-20 (found seed "
        "{}, short_conv {}, norm_eps {})",
        src, e.seed, e.short_conv, e.norm_eps);
  }
  ENGRAM_RETURN_IF_ERROR(PositiveInt(src, "engram_compressed_vocab_size", e.compressed_vocab_size));
  if (e.compressed_vocab_size > c.vocab_size) {
    return InvalidArgument(
        "{}: key \"engram_compressed_vocab_size\" = {} is larger than vocab_size = {} (the "
        "compression only merges token ids)",
        src, e.compressed_vocab_size, c.vocab_size);
  }
  if (e.num_embeddings < 0) {
    return InvalidArgument("{}: key \"engram_num_embeddings\" = {} must be positive", src,
                           e.num_embeddings);
  }
  return Status::Ok();
}

// engram_num_embeddings, when given, against the prime geometry (after every size is bounded,
// so the search is short).
Status ValidateNumEmbeddings(const EngramConfig& e, const std::string& src) {
  if (e.num_embeddings == 0) return Status::Ok();
  auto geometry = ComputeEngramGeometry(e);
  if (!geometry.ok()) return geometry.status().WithContext(src);
  int64_t rows = 0;
  std::vector<int64_t> per_layer;
  for (const EngramLayerGeometry& g : *geometry) {
    rows += g.total_rows;
    per_layer.push_back(g.total_rows);
  }
  if (rows == e.num_embeddings) return Status::Ok();
  return InvalidArgument(
      "{}: key \"engram_num_embeddings\" = {}, but engram_layer_ids, engram_max_ngram_size, "
      "engram_vocab_size and engram_n_heads give {} table rows ({} per layer)",
      src, e.num_embeddings, rows, fmt::join(per_layer, " + "));
}

Status ValidateEngram(const ModelConfig& c, const EngramConfig& e, const std::string& src) {
  const EngramKeys k = KeysOf(e);
  if (e.max_ngram_size < 2) {
    return InvalidArgument("{}: key \"{}\" = {} must be at least 2", src, k.max_ngram_size,
                           e.max_ngram_size);
  }
  if (e.max_ngram_size > ConfigLimits::kMaxNgramSize) {
    return InvalidArgument("{}: key \"{}\" = {} is larger than engramd supports (at most {})", src,
                           k.max_ngram_size, e.max_ngram_size, ConfigLimits::kMaxNgramSize);
  }
  if (e.engram_vocab_size.size() != static_cast<size_t>(e.max_ngram_size - 1)) {
    return InvalidArgument("{}: key \"{}\" has {} entries, expected max_ngram_size - 1 = {}", src,
                           k.engram_vocab_size, e.engram_vocab_size.size(), e.max_ngram_size - 1);
  }
  for (size_t i = 0; i < e.engram_vocab_size.size(); ++i) {
    if (e.engram_vocab_size[i] < 2) {
      return InvalidArgument("{}: key \"{}\" = {} must be at least 2", src, VocabKey(e, k, i),
                             e.engram_vocab_size[i]);
    }
    if (e.engram_vocab_size[i] > ConfigLimits::kMaxEngramVocab) {
      return InvalidArgument("{}: key \"{}\" = {} is larger than engramd supports (at most {})",
                             src, VocabKey(e, k, i), e.engram_vocab_size[i],
                             ConfigLimits::kMaxEngramVocab);
    }
  }
  if (!e.v41()) {
    ENGRAM_RETURN_IF_ERROR(
        SizeInRange(src, k.n_embed, e.n_embed_per_ngram, ConfigLimits::kMaxEngramEmbed));
  }
  ENGRAM_RETURN_IF_ERROR(
      SizeInRange(src, k.n_head, e.n_head_per_ngram, ConfigLimits::kMaxEngramHeads));
  if (e.v41()) {
    // n_embed_per_ngram is engram_n_heads x engram_head_dim.
    ENGRAM_RETURN_IF_ERROR(
        SizeInRange(src, k.n_embed, e.head_dim(), ConfigLimits::kMaxEngramEmbed));
    ENGRAM_RETURN_IF_ERROR(SizeInRange(src, "engram_n_heads x engram_head_dim", e.n_embed_per_ngram,
                                       ConfigLimits::kMaxEngramEmbed));
  }
  if (e.n_embed_per_ngram % e.n_head_per_ngram != 0) {
    return InvalidArgument("{}: key \"{}\" = {} is not divisible by n_head_per_ngram = {}", src,
                           k.n_embed, e.n_embed_per_ngram, e.n_head_per_ngram);
  }
  ENGRAM_RETURN_IF_ERROR(
      SizeInRange(src, "engram.kernel_size", e.kernel_size, ConfigLimits::kMaxKernelSize));
  ENGRAM_RETURN_IF_ERROR(Positive(src, "engram.norm_eps", e.norm_eps));
  ENGRAM_RETURN_IF_ERROR(Positive(src, "engram.conv_norm_eps", e.conv_norm_eps));
  if (e.seed < 0) {
    return InvalidArgument("{}: key \"engram.seed\" = {} must not be negative", src, e.seed);
  }
  if (e.pad_id < 0 || e.pad_id >= c.vocab_size) {
    return InvalidArgument("{}: key \"{}\" = {} is outside [0, vocab_size = {})", src, k.pad_id,
                           e.pad_id, c.vocab_size);
  }
  if (e.layer_ids.empty()) {
    return InvalidArgument("{}: key \"{}\" is empty (expected at least one layer)", src,
                           k.layer_ids);
  }
  std::set<int> seen;
  for (size_t i = 0; i < e.layer_ids.size(); ++i) {
    const int l = e.layer_ids[i];
    if (l < 0) {
      return InvalidArgument("{}: key \"{}[{}]\" = {} is negative", src, k.layer_ids, i, l);
    }
    if (l >= c.num_hidden_layers) {
      return InvalidArgument("{}: key \"{}[{}]\" = {} is beyond num_hidden_layers = {}", src,
                             k.layer_ids, i, l, c.num_hidden_layers);
    }
    if (!seen.insert(l).second) {
      return InvalidArgument("{}: key \"{}[{}]\" = {} appears twice", src, k.layer_ids, i, l);
    }
  }
  // Each table head is a prime searched for at start: bound their number.
  const int64_t heads = static_cast<int64_t>(e.layer_ids.size()) * e.num_heads();
  if (heads > ConfigLimits::kMaxEngramTableHeads) {
    return InvalidArgument(
        "{}: engram has {} table heads ({} {} x (max_ngram_size - 1) {} x "
        "{} {}); engramd supports at most {}",
        src, heads, k.layer_ids, e.layer_ids.size(), e.max_ngram_size - 1, k.n_head,
        e.n_head_per_ngram, ConfigLimits::kMaxEngramTableHeads);
  }
  ENGRAM_RETURN_IF_ERROR(ValidateVariant(c, e, src));
  return ValidateNumEmbeddings(e, src);
}

}  // namespace

bool EngramConfig::IsEngramLayer(int layer) const { return LayerIndex(layer) >= 0; }

int EngramConfig::LayerIndex(int layer) const {
  auto it = std::find(layer_ids.begin(), layer_ids.end(), layer);
  return it == layer_ids.end() ? -1 : static_cast<int>(it - layer_ids.begin());
}

Result<ModelConfig> ModelConfig::FromJson(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) {
    return InvalidArgument("{}: expected a JSON object, found {}", source, Describe(j));
  }
  FieldReader r(j, source, "");
  ModelConfig c;
  ENGRAM_ASSIGN_OR_RETURN(c.model_type, ParseModelType(r, j, source));
  ENGRAM_RETURN_IF_ERROR(r.Int("hidden_size", &c.hidden_size, true));
  ENGRAM_RETURN_IF_ERROR(r.Int("intermediate_size", &c.intermediate_size, true));
  ENGRAM_RETURN_IF_ERROR(r.Int("num_hidden_layers", &c.num_hidden_layers, true));
  ENGRAM_RETURN_IF_ERROR(r.Int("num_attention_heads", &c.num_attention_heads, true));
  ENGRAM_RETURN_IF_ERROR(r.Int("vocab_size", &c.vocab_size, true));
  c.num_key_value_heads = c.num_attention_heads;
  ENGRAM_RETURN_IF_ERROR(r.Int("num_key_value_heads", &c.num_key_value_heads));
  ENGRAM_RETURN_IF_ERROR(r.Int("head_dim", &c.head_dim));
  if (!r.Has("head_dim") && c.num_attention_heads > 0) {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return InvalidArgument(
          "{}: hidden_size = {} is not divisible by num_attention_heads = {} (and no head_dim "
          "is given)",
          source, c.hidden_size, c.num_attention_heads);
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  ENGRAM_RETURN_IF_ERROR(r.Int("max_position_embeddings", &c.max_position_embeddings));
  ENGRAM_RETURN_IF_ERROR(r.Double("rms_norm_eps", &c.rms_norm_eps));
  ENGRAM_RETURN_IF_ERROR(r.Double("rope_theta", &c.rope_theta));
  if (r.Has("rope_scaling")) {
    ENGRAM_ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(j.at("rope_scaling"), source));
  }
  ENGRAM_RETURN_IF_ERROR(r.Bool("tie_word_embeddings", &c.tie_word_embeddings));
  ENGRAM_RETURN_IF_ERROR(r.Bool("attention_bias", &c.attention_bias));
  if (c.model_type == "qwen2") c.attention_bias = true;  // Qwen2 always has q/k/v biases
  ENGRAM_RETURN_IF_ERROR(r.Bool("mlp_bias", &c.mlp_bias));
  ENGRAM_RETURN_IF_ERROR(r.Int("bos_token_id", &c.bos_token_id));
  if (r.Has("eos_token_id")) {
    const json& eos = j.at("eos_token_id");
    if (eos.is_number_integer()) {
      c.eos_token_ids = {eos.get<int64_t>()};
    } else if (eos.is_array()) {
      ENGRAM_RETURN_IF_ERROR(r.IntList("eos_token_id", &c.eos_token_ids, true));
    } else {
      return r.WrongType("eos_token_id", eos, "an integer or an array of integers");
    }
  }
  // Engram: the "engram" object (the paper's module) or DeepSeek-V4.1's flat keys, not both.
  const char* v41_key = FirstV41Key(j);
  if (r.Has("engram") && v41_key != nullptr) {
    return InvalidArgument(
        "{}: both an \"engram\" object and the DeepSeek-V4.1 flat key \"{}\" are present; "
        "describe Engram one way (the \"engram\" object or the engram_* keys)",
        source, v41_key);
  }
  if (r.Has("engram")) {
    ENGRAM_ASSIGN_OR_RETURN(c.engram, ParseEngram(j.at("engram"), source));
  } else if (v41_key != nullptr) {
    ENGRAM_ASSIGN_OR_RETURN(c.engram, ParseV41(j, source));
  }
  if (r.Has("hc_mult")) {
    // Hyper-connections widen the residual stream of the whole backbone: refused with or
    // without Engram (ValidateVariant repeats the check for configs built in code).
    int hc_mult = 1;
    ENGRAM_RETURN_IF_ERROR(r.Int("hc_mult", &hc_mult));
    if (hc_mult != 1) return HcMultUnsupported(source, hc_mult);
  }
  if (r.Has("quantization_config")) {
    ENGRAM_ASSIGN_OR_RETURN(c.quantization, ParseQuantization(j.at("quantization_config"), source));
  }
  ENGRAM_RETURN_IF_ERROR(c.Validate(source));
  return c;
}

Result<ModelConfig> ModelConfig::Load(const std::string& path) {
  ENGRAM_ASSIGN_OR_RETURN(json j, ReadJsonFile(path, kMaxConfigFileBytes, "model config"));
  return FromJson(j, path);
}

nlohmann::json ModelConfig::ToJson() const {
  json j = json::object();
  j["architectures"] = {model_type == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
  j["model_type"] = model_type;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["vocab_size"] = vocab_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (rope_scaling) {
    j["rope_scaling"] = {
        {"rope_type", rope_scaling->rope_type},
        {"factor", rope_scaling->factor},
        {"low_freq_factor", rope_scaling->low_freq_factor},
        {"high_freq_factor", rope_scaling->high_freq_factor},
        {"original_max_position_embeddings", rope_scaling->original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["attention_bias"] = attention_bias;
  j["mlp_bias"] = mlp_bias;
  j["hidden_act"] = "silu";
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1) {
    j["eos_token_id"] = eos_token_ids[0];
  } else if (!eos_token_ids.empty()) {
    j["eos_token_id"] = eos_token_ids;
  }
  if (engram && engram->v41()) {
    const EngramConfig& e = *engram;
    j["engram_layer_ids"] = e.layer_ids;
    j["engram_max_ngram_size"] = e.max_ngram_size;
    j["engram_vocab_size"] = e.engram_vocab_size.empty() ? 0 : e.engram_vocab_size.front();
    j["engram_n_heads"] = e.n_head_per_ngram;
    j["engram_head_dim"] = e.head_dim();
    j["engram_pad_token_id"] = e.pad_id;
    j["engram_compressed_vocab_size"] = e.compressed_vocab_size;
    if (e.num_embeddings > 0) j["engram_num_embeddings"] = e.num_embeddings;
    j["hc_mult"] = e.hc_mult;
  } else if (engram) {
    j["engram"] = {{"engram_vocab_size", engram->engram_vocab_size},
                   {"max_ngram_size", engram->max_ngram_size},
                   {"n_embed_per_ngram", engram->n_embed_per_ngram},
                   {"n_head_per_ngram", engram->n_head_per_ngram},
                   {"layer_ids", engram->layer_ids},
                   {"pad_id", engram->pad_id},
                   {"seed", engram->seed},
                   {"kernel_size", engram->kernel_size},
                   {"norm_eps", engram->norm_eps},
                   {"conv_norm_eps", engram->conv_norm_eps},
                   {"short_conv", engram->short_conv}};
  }
  if (quantization) {
    json q = {{"quant_method", quantization->quant_method},
              {"activation_scheme", "dynamic"},
              {"weight_block_size", {quantization->block_n, quantization->block_k}}};
    if (quantization->fp8()) q["fmt"] = "e4m3";
    if (!quantization->modules_to_not_convert.empty()) {
      q["modules_to_not_convert"] = quantization->modules_to_not_convert;
    }
    j["quantization_config"] = std::move(q);
  }
  return j;
}

Status ModelConfig::Validate(const std::string& src) const {
  using L = ConfigLimits;
  ENGRAM_RETURN_IF_ERROR(SizeInRange(src, "hidden_size", hidden_size, L::kMaxHidden));
  ENGRAM_RETURN_IF_ERROR(
      SizeInRange(src, "intermediate_size", intermediate_size, L::kMaxIntermediate));
  ENGRAM_RETURN_IF_ERROR(SizeInRange(src, "num_hidden_layers", num_hidden_layers, L::kMaxLayers));
  ENGRAM_RETURN_IF_ERROR(
      SizeInRange(src, "num_attention_heads", num_attention_heads, L::kMaxAttentionHeads));
  ENGRAM_RETURN_IF_ERROR(
      SizeInRange(src, "num_key_value_heads", num_key_value_heads, L::kMaxAttentionHeads));
  ENGRAM_RETURN_IF_ERROR(SizeInRange(src, "head_dim", head_dim, L::kMaxHeadDim));
  ENGRAM_RETURN_IF_ERROR(SizeInRange(src, "vocab_size", vocab_size, L::kMaxVocab));
  ENGRAM_RETURN_IF_ERROR(
      SizeInRange(src, "max_position_embeddings", max_position_embeddings, L::kMaxPositions));
  ENGRAM_RETURN_IF_ERROR(Positive(src, "rms_norm_eps", rms_norm_eps));
  ENGRAM_RETURN_IF_ERROR(Positive(src, "rope_theta", rope_theta));
  if (!std::isfinite(rms_norm_eps) || !std::isfinite(rope_theta)) {
    return InvalidArgument("{}: rms_norm_eps = {} and rope_theta = {} must be finite", src,
                           rms_norm_eps, rope_theta);
  }
  if (model_type != "llama" && model_type != "qwen2") {
    return InvalidArgument("{}: model_type \"{}\" is not supported (expected llama or qwen2)", src,
                           model_type);
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    return InvalidArgument(
        "{}: num_attention_heads = {} is not divisible by num_key_value_heads = {}", src,
        num_attention_heads, num_key_value_heads);
  }
  if (head_dim % 2 != 0) {
    return InvalidArgument("{}: head_dim = {} must be even (rotary embedding)", src, head_dim);
  }
  if (rope_scaling) {
    const RopeScaling& rs = *rope_scaling;
    ENGRAM_RETURN_IF_ERROR(Positive(src, "rope_scaling.factor", rs.factor));
    if (rs.rope_type == "llama3") {
      ENGRAM_RETURN_IF_ERROR(Positive(src, "rope_scaling.low_freq_factor", rs.low_freq_factor));
      ENGRAM_RETURN_IF_ERROR(PositiveInt(src, "rope_scaling.original_max_position_embeddings",
                                         rs.original_max_position_embeddings));
      if (rs.high_freq_factor <= rs.low_freq_factor) {
        return InvalidArgument(
            "{}: rope_scaling.high_freq_factor = {} must be greater than low_freq_factor = {}", src,
            rs.high_freq_factor, rs.low_freq_factor);
      }
    } else if (rs.rope_type != "linear" && rs.rope_type != "default") {
      return InvalidArgument("{}: rope_scaling.rope_type \"{}\" is not supported", src,
                             rs.rope_type);
    }
  }
  if (bos_token_id >= vocab_size) {
    return InvalidArgument("{}: bos_token_id = {} is outside [0, vocab_size = {})", src,
                           bos_token_id, vocab_size);
  }
  for (size_t i = 0; i < eos_token_ids.size(); ++i) {
    if (eos_token_ids[i] < 0 || eos_token_ids[i] >= vocab_size) {
      return InvalidArgument("{}: eos_token_id[{}] = {} is outside [0, vocab_size = {})", src, i,
                             eos_token_ids[i], vocab_size);
    }
  }
  if (engram) ENGRAM_RETURN_IF_ERROR(ValidateEngram(*this, *engram, src));
  return Status::Ok();
}

}  // namespace engram
