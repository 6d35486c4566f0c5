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

struct EngramWeights {
  Tensor table;       // multi_head_embedding.embedding.weight [sum of primes, Dh]
  Tensor value_w;     // value_proj.weight [hidden, engram_dim]
  Tensor value_b;     // value_proj.bias [hidden]
  Tensor key_w;       // key_projs.0.weight [hidden, engram_dim]
  Tensor key_b;       // key_projs.0.bias [hidden]
  Tensor norm_key;    // norm1.0.weight [hidden]
  Tensor norm_query;  // norm2.0.weight [hidden]
  Tensor conv_w;      // short_conv.conv.weight [hidden, 1, K] (absent if !short_conv)
  Tensor conv_norm;   // short_conv.norms.0.weight [hidden]   (absent if !short_conv)
};

struct LayerWeights {
  Tensor input_norm;            // input_layernorm.weight [H]
  Tensor q_w, k_w, v_w, o_w;    // self_attn.{q,k,v,o}_proj.weight
  Tensor q_b, k_b, v_b;         // present when attention_bias
  Tensor post_norm;             // post_attention_layernorm.weight [H]
  Tensor gate_w, up_w, down_w;  // mlp.{gate,up,down}_proj.weight
  std::optional<EngramWeights> engram;
};

struct HostWeights {
  Tensor embed;  // model.embed_tokens.weight [V, H]
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // model.norm.weight [H]
  Tensor lm_head;     // lm_head.weight [V, H] (= embed when tied)
};

// What role a tensor plays; synthetic weights pick their distribution by it.
enum class TensorRole : uint8_t {
  kEmbedding,     // model.embed_tokens.weight
  kNorm,          // RMSNorm weights of the backbone and of the Engram module
  kLinear,        // q/k/v/gate/up projections [out, in]
  kOutputLinear,  // o_proj, down_proj (write into the residual stream)
  kBias,          // q/k/v biases, Engram projection biases
  kLmHead,        // lm_head.weight
  kEngramTable,   // multi_head_embedding.embedding.weight
  kEngramProj,    // value_proj / key_projs.0 weights
  kEngramConv,    // short_conv.conv.weight
};

struct ExpectedTensor {
  std::string name;  // Hugging Face name
  std::vector<int64_t> shape;
  TensorRole role = TensorRole::kLinear;
  int layer = -1;  // decoder layer, -1 for embedding / final norm / lm_head
};

// Every tensor `config` implies, in file order: embedding, then per layer the attention,
// MLP, norms and Engram tensors, then model.norm and lm_head (absent when tied).
// INVALID_ARGUMENT when the Engram geometry cannot be derived.
Result<std::vector<ExpectedTensor>> ExpectedTensors(const ModelConfig& config);

// The tensor name of the Engram table of model layer `layer`.
std::string EngramTableName(int layer);

// Looks up and shape-checks every tensor of ExpectedTensors (Engram table rows =
// ComputeEngramGeometry's total_rows); errors name the file, tensor, expected and found.
// Dtypes F32, F16 and BF16 are accepted, anything else is INVALID_ARGUMENT. mlp_bias models
// are UNIMPLEMENTED. Tensors the config does not imply are ignored.
// Every tensor of ExpectedTensors is in `store` with its expected shape (names and shapes
// only: no data is touched). Run when a model is opened, before anything is sized from the
// config, so that a config.json whose sizes disagree with its tensors is refused naming both.
Status CheckExpectedTensors(const ModelConfig& config, const TensorStore& store);
Result<HostWeights> LoadHostWeights(const ModelConfig& config, const TensorStore& store);

}  // namespace engram
