#include "model/weights.h"

#include <map>

#include <fmt/ranges.h>

#include "model/engram_geometry.h"

namespace engram {
namespace {

void Add(std::vector<ExpectedTensor>& out, std::string name, std::vector<int64_t> shape,
         TensorRole role, int layer) {
  out.push_back(ExpectedTensor{std::move(name), std::move(shape), role, layer});
}

}  // namespace

std::string EngramTableName(int layer) {
  return "model.layers." + std::to_string(layer) + ".engram.multi_head_embedding.embedding.weight";
}

Result<std::vector<ExpectedTensor>> ExpectedTensors(const ModelConfig& c) {
  const int64_t H = c.hidden_size;
  const int64_t I = c.intermediate_size;
  const int64_t V = c.vocab_size;
  const int64_t q_dim = c.num_attention_heads * c.head_dim;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim;
  std::vector<EngramLayerGeometry> geometry;
  if (c.engram) {
    ENGRAM_ASSIGN_OR_RETURN(geometry, ComputeEngramGeometry(*c.engram));
  }
  std::vector<ExpectedTensor> out;
  Add(out, "model.embed_tokens.weight", {V, H}, TensorRole::kEmbedding, -1);
  for (int l = 0; l < static_cast<int>(c.num_hidden_layers); ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    Add(out, p + "input_layernorm.weight", {H}, TensorRole::kNorm, l);
    Add(out, p + "self_attn.q_proj.weight", {q_dim, H}, TensorRole::kLinear, l);
    Add(out, p + "self_attn.k_proj.weight", {kv_dim, H}, TensorRole::kLinear, l);
    Add(out, p + "self_attn.v_proj.weight", {kv_dim, H}, TensorRole::kLinear, l);
    if (c.attention_bias) {
      Add(out, p + "self_attn.q_proj.bias", {q_dim}, TensorRole::kBias, l);
      Add(out, p + "self_attn.k_proj.bias", {kv_dim}, TensorRole::kBias, l);
      Add(out, p + "self_attn.v_proj.bias", {kv_dim}, TensorRole::kBias, l);
    }
    Add(out, p + "self_attn.o_proj.weight", {H, q_dim}, TensorRole::kOutputLinear, l);
    Add(out, p + "post_attention_layernorm.weight", {H}, TensorRole::kNorm, l);
    Add(out, p + "mlp.gate_proj.weight", {I, H}, TensorRole::kLinear, l);
    Add(out, p + "mlp.up_proj.weight", {I, H}, TensorRole::kLinear, l);
    Add(out, p + "mlp.down_proj.weight", {H, I}, TensorRole::kOutputLinear, l);
    const int e = c.engram ? c.engram->LayerIndex(l) : -1;
    if (e < 0) continue;
    const EngramConfig& ec = *c.engram;
    const std::string q = p + "engram.";
    Add(out, q + "multi_head_embedding.embedding.weight", {geometry[e].total_rows, ec.head_dim()},
        TensorRole::kEngramTable, l);
    Add(out, q + "value_proj.weight", {H, ec.engram_dim()}, TensorRole::kEngramProj, l);
    Add(out, q + "value_proj.bias", {H}, TensorRole::kBias, l);
    Add(out, q + "key_projs.0.weight", {H, ec.engram_dim()}, TensorRole::kEngramProj, l);
    Add(out, q + "key_projs.0.bias", {H}, TensorRole::kBias, l);
    Add(out, q + "norm1.0.weight", {H}, TensorRole::kNorm, l);
    Add(out, q + "norm2.0.weight", {H}, TensorRole::kNorm, l);
    if (ec.short_conv) {
      Add(out, q + "short_conv.conv.weight", {H, 1, ec.kernel_size}, TensorRole::kEngramConv, l);
      Add(out, q + "short_conv.norms.0.weight", {H}, TensorRole::kNorm, l);
    }
  }
  Add(out, "model.norm.weight", {H}, TensorRole::kNorm, -1);
  if (!c.tie_word_embeddings) Add(out, "lm_head.weight", {V, H}, TensorRole::kLmHead, -1);
  return out;
}

Status CheckExpectedTensors(const ModelConfig& config, const TensorStore& store) {
  ENGRAM_ASSIGN_OR_RETURN(std::vector<ExpectedTensor> expected, ExpectedTensors(config));
  for (const ExpectedTensor& e : expected) {
    const TensorInfo* info = store.Info(e.name);
    if (info == nullptr) {
      return NotFound("{}: no tensor {} (config.json implies it: {} layers{})", store.source(),
                      e.name, config.num_hidden_layers,
                      config.engram ? ", Engram layers as engram.layer_ids" : "");
    }
    if (info->shape != e.shape) {
      return InvalidArgument(
          "{}: tensor {} has shape {}, but config.json implies {} (hidden_size {}, "
          "intermediate_size {}, vocab_size {}, heads {}/{} x head_dim {})",
          info->file.empty() ? store.source() : info->file, e.name, info->shape, e.shape,
          config.hidden_size, config.intermediate_size, config.vocab_size,
          config.num_attention_heads, config.num_key_value_heads, config.head_dim);
    }
  }
  return Status::Ok();
}

Result<HostWeights> LoadHostWeights(const ModelConfig& config, const TensorStore& store) {
  if (config.mlp_bias) {
    return Unimplemented("mlp_bias = true is not supported (Llama/Qwen2 MLPs have no biases)");
  }
  ENGRAM_ASSIGN_OR_RETURN(std::vector<ExpectedTensor> expected, ExpectedTensors(config));
  std::map<std::string, Tensor> got;
  for (const ExpectedTensor& e : expected) {
    ENGRAM_ASSIGN_OR_RETURN(Tensor t, store.GetChecked(e.name, e.shape));
    if (t.dtype != DType::kF32 && t.dtype != DType::kF16 && t.dtype != DType::kBF16) {
      const TensorInfo* info = store.Info(e.name);
      return InvalidArgument("{}: tensor {} has dtype {}, expected a float type (F32, F16, BF16)",
                             info && !info->file.empty() ? info->file : "<in-memory>", e.name,
                             DTypeName(t.dtype));
    }
    got.emplace(e.name, std::move(t));
  }
  auto take = [&got](const std::string& name) {
    auto it = got.find(name);
    return it == got.end() ? Tensor{} : it->second;
  };

  HostWeights w;
  w.embed = take("model.embed_tokens.weight");
  w.final_norm = take("model.norm.weight");
  w.lm_head = config.tie_word_embeddings ? w.embed : take("lm_head.weight");
  w.layers.resize(static_cast<size_t>(config.num_hidden_layers));
  for (int l = 0; l < static_cast<int>(config.num_hidden_layers); ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    LayerWeights& L = w.layers[static_cast<size_t>(l)];
    L.input_norm = take(p + "input_layernorm.weight");
    L.q_w = take(p + "self_attn.q_proj.weight");
    L.k_w = take(p + "self_attn.k_proj.weight");
    L.v_w = take(p + "self_attn.v_proj.weight");
    L.o_w = take(p + "self_attn.o_proj.weight");
    if (config.attention_bias) {
      L.q_b = take(p + "self_attn.q_proj.bias");
      L.k_b = take(p + "self_attn.k_proj.bias");
      L.v_b = take(p + "self_attn.v_proj.bias");
    }
    L.post_norm = take(p + "post_attention_layernorm.weight");
    L.gate_w = take(p + "mlp.gate_proj.weight");
    L.up_w = take(p + "mlp.up_proj.weight");
    L.down_w = take(p + "mlp.down_proj.weight");
    if (!config.engram || !config.engram->IsEngramLayer(l)) continue;
    const std::string q = p + "engram.";
    EngramWeights E;
    E.table = take(q + "multi_head_embedding.embedding.weight");
    E.value_w = take(q + "value_proj.weight");
    E.value_b = take(q + "value_proj.bias");
    E.key_w = take(q + "key_projs.0.weight");
    E.key_b = take(q + "key_projs.0.bias");
    E.norm_key = take(q + "norm1.0.weight");
    E.norm_query = take(q + "norm2.0.weight");
    if (config.engram->short_conv) {
      E.conv_w = take(q + "short_conv.conv.weight");
      E.conv_norm = take(q + "short_conv.norms.0.weight");
    }
    L.engram = std::move(E);
  }
  return w;
}

}  // namespace engram
