// Host weights of a model: every tensor the config implies, looked up by its Hugging Face
// name and shape-checked. Views alias the TensorStore's mappings.
#pragma once

#include <optional>
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
  Tensor input_norm;                // input_layernorm.weight [H]
  Tensor q_w, k_w, v_w, o_w;        // self_attn.{q,k,v,o}_proj.weight
  Tensor q_b, k_b, v_b;             // present when attention_bias
  Tensor post_norm;                 // post_attention_layernorm.weight [H]
  Tensor gate_w, up_w, down_w;      // mlp.{gate,up,down}_proj.weight
  std::optional<EngramWeights> engram;
};

struct HostWeights {
  Tensor embed;       // model.embed_tokens.weight [V, H]
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // model.norm.weight [H]
  Tensor lm_head;     // lm_head.weight [V, H] (= embed when tied)
};

// Looks up and shape-checks every tensor (Engram table rows = ComputeEngramGeometry's
// total_rows); errors name the file, tensor, expected and found.
Result<HostWeights> LoadHostWeights(const ModelConfig& config, const TensorStore& store);

}  // namespace engram
