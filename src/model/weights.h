// Host weights of a model: every tensor the config implies, looked up by its Hugging Face
// name and shape-checked. Views alias the TensorStore's mappings.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kernels/tensor.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace engram {

// One Engram layer's tensors. The table (both variants) is F32/F16/BF16, or F8_E4M3 with
// per-row E8M0 scales (FP8 rows, fp8.h). The paper variant fills value_w ... conv_norm; V4.1
// fills wkv, wkv_scale, q_weight and k_weight.
struct EngramWeights {
  Tensor table;        // multi_head_embedding.embedding.weight | embed.weight [sum of primes, Dh]
  Tensor table_scale;  // ...embedding.scale | embed.scale F8_E8M0 [rows, Dh/32] (FP8 tables)
  Tensor value_w;      // value_proj.weight [hidden, engram_dim]
  Tensor value_s;      // its weight_scale_inv (quantized as the backbone's Linear weights only)
  Tensor value_b;      // value_proj.bias [hidden]
  Tensor key_w;        // key_projs.0.weight [hidden, engram_dim]
  Tensor key_s;        // its weight_scale_inv (quantized as the backbone's Linear weights only)
  Tensor key_b;        // key_projs.0.bias [hidden]
  Tensor norm_key;     // norm1.0.weight [hidden]
  Tensor norm_query;   // norm2.0.weight [hidden]
  Tensor conv_w;       // short_conv.conv.weight [hidden, 1, K] (absent if !short_conv)
  Tensor conv_norm;    // short_conv.norms.0.weight [hidden]   (absent if !short_conv)
  // V4.1
  Tensor wkv;        // wkv.weight F8_E4M3 | BF16 | F32 [(hc_mult + 1) * hidden, engram_dim]
  Tensor wkv_scale;  // wkv.scale F8_E8M0 [ceil(O/32), ceil(I/32)] (FP8 wkv only)
  Tensor q_weight;   // q_weight [hc_mult, hidden]
  Tensor k_weight;   // k_weight [hc_mult, hidden]
};

// The backbone's Linear weights are F32/F16/BF16, or quantized as config.quantization says
// (F8_E4M3 or I8) with their `<name>.weight_scale_inv` F32 block scales in the *_s tensor
// (empty for a weight that is not quantized).
struct LayerWeights {
  Tensor input_norm;            // input_layernorm.weight [H]
  Tensor q_w, k_w, v_w, o_w;    // self_attn.{q,k,v,o}_proj.weight
  Tensor q_s, k_s, v_s, o_s;    // their weight_scale_inv (quantized weights only)
  Tensor q_b, k_b, v_b;         // present when attention_bias
  Tensor post_norm;             // post_attention_layernorm.weight [H]
  Tensor gate_w, up_w, down_w;  // mlp.{gate,up,down}_proj.weight
  Tensor gate_s, up_s, down_s;  // their weight_scale_inv (quantized weights only)
  std::optional<EngramWeights> engram;
};

struct HostWeights {
  Tensor embed;  // model.embed_tokens.weight [V, H]
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // model.norm.weight [H]
  Tensor lm_head;     // lm_head.weight [V, H] (= embed when tied)
  Tensor lm_head_s;   // lm_head.weight_scale_inv (a quantized lm_head only)
};

// What role a tensor plays; synthetic weights pick their distribution by it.
enum class TensorRole : uint8_t {
  kEmbedding,     // model.embed_tokens.weight
  kNorm,          // RMSNorm weights of the backbone and of the Engram module
  kLinear,        // q/k/v/gate/up projections [out, in]
  kOutputLinear,  // o_proj, down_proj (write into the residual stream)
  kBias,          // q/k/v biases, Engram projection biases
  kLmHead,        // lm_head.weight
  kEngramTable,   // multi_head_embedding.embedding.weight | embed.weight (V4.1)
  kEngramProj,    // value_proj / key_projs.0 weights (Linear weights: may be quantized)
  kEngramConv,    // short_conv.conv.weight
  kEngramScale,   // F8_E8M0 scales of an FP8 table or wkv (ExpectedTensor::scale_of)
  kEngramWkv,     // V4.1 wkv.weight
  kEngramGateW,   // V4.1 q_weight / k_weight
  kLinearScale,   // weight_scale_inv of a quantized Linear weight (ExpectedTensor::scale_of)
};

struct ExpectedTensor {
  std::string name;  // Hugging Face name
  std::vector<int64_t> shape;
  TensorRole role = TensorRole::kLinear;
  int layer = -1;  // decoder layer, -1 for embedding / final norm / lm_head
  // For a scale tensor (kEngramScale, kLinearScale): the tensor it scales. It is expected
  // exactly when that tensor is F8_E4M3 (or, for kLinearScale, the config's quantized dtype),
  // and its shape is then `shape`.
  std::string scale_of;
};

// Every tensor `config` implies, in file order: embedding, then per layer the attention,
// MLP, norms and Engram tensors, then model.norm and lm_head (absent when tied). The scale
// entries are conditional: a file holds one exactly when the tensor named by its scale_of is
// quantized (so a writer of BF16 tables skips them). kLinearScale entries (the
// `<name>.weight_scale_inv` of each backbone Linear weight, the lm_head included) are listed
// only when config.quantization is set.
// INVALID_ARGUMENT when the Engram geometry cannot be derived.
Result<std::vector<ExpectedTensor>> ExpectedTensors(const ModelConfig& config);

// The tensor names of the Engram table of model layer `layer` and of its E8M0 row scales
// (present only when the table is F8_E4M3), for the config's layout:
// model.layers.{l}.engram.multi_head_embedding.embedding.{weight,scale} (paper) or
// model.layers.{l}.engram.embed.{weight,scale} (V4.1).
std::string EngramTableName(const EngramConfig& engram, int layer);
std::string EngramScaleName(const EngramConfig& engram, int layer);

// Every tensor of ExpectedTensors is in `store` with its expected shape and an accepted dtype
// (names, shapes and dtypes only: no data is touched). Run when a model is opened, before
// anything is sized from the config, so that a config.json whose sizes disagree with its
// tensors is refused naming both. Errors name the file, tensor, expected and found.
//  - dtypes: F32, F16, BF16 everywhere; F8_E4M3 also for the Engram table and wkv (with an
//    FP8 table, Dh must be a multiple of 32); config.quantization's dtype (F8_E4M3 for "fp8",
//    I8 for "engram_int8") also for the backbone's Linear weights, with their weight_scale_inv
//    (F32, or BF16 for fp8) of shape [ceil(O / block_n), ceil(I / block_k)] required exactly
//    then; a quantized dtype without quantization_config is refused naming it.
//  - scales (ExpectedTensor::scale_of): required exactly when the tensor they scale is
//    F8_E4M3 (NOT_FOUND "...: missing; ... is F8_E4M3, which needs its F8_E8M0 scales [..]"),
//    then F8_E8M0 with the expected shape; a scale beside a non-FP8 tensor is refused too.
// Tensors the config does not imply are ignored.
Status CheckExpectedTensors(const ModelConfig& config, const TensorStore& store);
// Views of every tensor ExpectedTensors lists (the scales only where present), checked as
// CheckExpectedTensors does, and the values of every weight_scale_inv: finite and >= 0
// (INVALID_ARGUMENT naming file, tensor, index and value). mlp_bias models are UNIMPLEMENTED.
Result<HostWeights> LoadHostWeights(const ModelConfig& config, const TensorStore& store);

}  // namespace engram
