// ModelConfig: the Hugging Face Llama/Qwen2 config.json fields engramd uses, plus Engram in
// one of two layouts: the "engram" object (keys of the reference EngramConfig, variant
// kPaper) or DeepSeek-V4.1's flat top-level engram_* keys (variant kV41; docs/formats.md).
// Parsing validates every field and names the file and key of anything missing or wrong,
// with the expected value.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/dtype.h"
#include "common/status.h"
#include "text/vocab_limits.h"

namespace engram {

struct RopeScaling {
  std::string rope_type = "default";  // "default" | "llama3" | "linear"
  double factor = 1.0;
  double low_freq_factor = 1.0;                     // llama3
  double high_freq_factor = 4.0;                    // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

// Limits: config.json sizes above these are refused at parse time, before anything is
// allocated or searched from them (a 2^31-layer or 2^31-token config would otherwise abort on
// std::bad_alloc, a billion-head Engram spends hours in the prime search). Each is far above
// every released model's value.
struct ConfigLimits {
  static constexpr int64_t kMaxHidden = 1 << 17;
  static constexpr int64_t kMaxIntermediate = 1 << 20;
  static constexpr int64_t kMaxLayers = 1024;
  static constexpr int64_t kMaxAttentionHeads = 1024;
  static constexpr int64_t kMaxHeadDim = 2048;
  static constexpr int64_t kMaxVocab = engram::kMaxVocab;  // text/vocab_limits.h
  static constexpr int64_t kMaxPositions = 1 << 24;
  static constexpr int kMaxNgramSize = 16;
  static constexpr int64_t kMaxEngramVocab = int64_t{1} << 48;  // prime-search start per order
  static constexpr int64_t kMaxEngramEmbed = 1 << 16;           // n_embed_per_ngram
  static constexpr int64_t kMaxEngramHeads = 256;               // n_head_per_ngram
  static constexpr int64_t kMaxKernelSize = 64;
  // layer_ids x (max_ngram_size - 1) x n_head_per_ngram: one prime search each.
  static constexpr int64_t kMaxEngramTableHeads = 4096;
};

// Which Engram module a config describes (DESIGN.md, "Engram semantics"): the paper's
// (config.json "engram" object: key/value projections with biases, gate, short conv) or
// DeepSeek-V4.1's (flat engram_* keys: one fused wkv projection, gate from q_weight * k_weight
// with eps 1e-20, no short conv). Both share the hashing, the tables and the row path.
enum class EngramVariant : uint8_t { kPaper, kV41 };

struct EngramConfig {
  EngramVariant variant = EngramVariant::kPaper;
  std::vector<int64_t> engram_vocab_size;  // one per n-gram order 2..max_ngram_size
  int max_ngram_size = 3;                  // N
  int n_embed_per_ngram = 512;
  int n_head_per_ngram = 8;
  std::vector<int> layer_ids;
  int64_t pad_id = 2;  // raw token id; compressed before use
  int64_t seed = 0;
  int kernel_size = 4;  // K
  // RMSNorm eps of the key/query norms. The reference uses torch.nn.RMSNorm(eps=None), i.e.
  // torch.finfo(float32).eps.
  double norm_eps = 1.1920928955078125e-07;
  double conv_norm_eps = 1e-5;
  bool short_conv = true;
  // V4.1 engram_compressed_vocab_size: the compressed vocabulary every multiplier derives from;
  // the tokenizer's compression map must have exactly this many ids. 0 (the paper layout):
  // whatever the map has.
  int64_t compressed_vocab_size = 0;
  // V4.1 engram_num_embeddings when given (0 otherwise): table rows of all Engram layers
  // together, checked against the prime geometry.
  int64_t num_embeddings = 0;
  int hc_mult = 1;  // only 1 (no hyper-connections) is accepted

  bool v41() const { return variant == EngramVariant::kV41; }
  int num_heads() const { return (max_ngram_size - 1) * n_head_per_ngram; }  // H per layer
  int head_dim() const { return n_embed_per_ngram / n_head_per_ngram; }      // Dh
  int64_t engram_dim() const { return int64_t{max_ngram_size - 1} * n_embed_per_ngram; }
  bool IsEngramLayer(int layer) const;
  int LayerIndex(int layer) const;  // position of `layer` in layer_ids, -1 if absent
};

// config.json "quantization_config": how the backbone's Linear weights (q/k/v/o, gate/up/down,
// lm_head) may be stored quantized (docs/formats.md, "Quantized Linear weights"). A weight
// tensor `<name>.weight` in the quantized dtype has `<name>.weight_scale_inv` beside it, F32
// [ceil(O / block_n), ceil(I / block_k)]; the dequantized weight is q[o, i] times
// scale_inv[o / block_n, i / block_k]. Weights that stay F32/F16/BF16 (modules_to_not_convert)
// have no scales.
//  - "fp8": Hugging Face's fine-grained FP8 (DeepSeek-V3, Qwen3-*-FP8): F8_E4M3 weights,
//    weight_block_size [block_n, block_k] (usually [128, 128]), activation_scheme "dynamic".
//  - "engram_int8": engramd's int8 (engram pack quantize --weights int8): I8 weights in
//    [-127, 127], weight_block_size [1, 32].
struct WeightQuantization {
  std::string quant_method;  // "fp8" | "engram_int8"
  int64_t block_n = 0;       // weight_block_size[0]: output rows per scale
  int64_t block_k = 0;       // weight_block_size[1]: inputs per scale
  std::vector<std::string> modules_to_not_convert;

  bool fp8() const { return quant_method == "fp8"; }
  // The dtype of a quantized weight tensor: F8_E4M3 (fp8) or I8 (engram_int8).
  DType weight_dtype() const { return fp8() ? DType::kF8E4M3 : DType::kI8; }
  // The format name the engine reports ("fp8" | "int8").
  std::string_view format() const { return fp8() ? "fp8" : "int8"; }
};

struct ModelConfig {
  std::string model_type = "llama";  // "llama" | "qwen2"
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // defaults to hidden_size / num_attention_heads
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 4096;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (always true for qwen2)
  bool mlp_bias = false;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  std::optional<EngramConfig> engram;
  std::optional<WeightQuantization> quantization;  // "quantization_config"

  // Parses and validates; `source` (a file name) prefixes every error message.
  static Result<ModelConfig> FromJson(const nlohmann::json& j, const std::string& source);
  static Result<ModelConfig> Load(const std::string& path);
  // Round-trips through FromJson.
  nlohmann::json ToJson() const;
  // Cross-field checks (head counts divide, engram layer ids < num_hidden_layers, ...).
  Status Validate(const std::string& source) const;
};

}  // namespace engram
