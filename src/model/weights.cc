#include "model/weights.h"

#include <cmath>
#include <map>

#include <fmt/ranges.h>

#include "common/fp8.h"
#include "model/engram_geometry.h"

namespace engram {
namespace {

void Add(std::vector<ExpectedTensor>& out, std::string name, std::vector<int64_t> shape,
         TensorRole role, int layer, std::string scale_of = "") {
  out.push_back(
      ExpectedTensor{std::move(name), std::move(shape), role, layer, std::move(scale_of)});
}

// Scales per dimension of `n` values: one E8M0 scale per block of 32 (the last block may be
// partial).
int64_t Blocks(int64_t n) { return (n + kFp8Block - 1) / kFp8Block; }

std::string EngramPrefix(int layer) { return fmt::format("model.layers.{}.engram.", layer); }

// The file a tensor lives in, for messages; in-memory tensors name the store.
std::string FileOf(const TensorStore& store, const TensorInfo* info) {
  if (info != nullptr && !info->file.empty()) return info->file;
  return store.source().empty() ? std::string("<in-memory>") : store.source();
}

bool IsFloat(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }

bool IsLinearRole(TensorRole r) {
  return r == TensorRole::kLinear || r == TensorRole::kOutputLinear || r == TensorRole::kLmHead ||
         r == TensorRole::kEngramProj;
}

// "<module>.weight" -> "<module>.weight_scale_inv".
std::string ScaleInvName(const std::string& weight) { return weight + "_scale_inv"; }

// A backbone Linear weight, and its weight_scale_inv when the config quantizes Linear weights.
void AddLinear(std::vector<ExpectedTensor>& out, const ModelConfig& c, std::string name,
               std::vector<int64_t> shape, TensorRole role, int layer) {
  std::vector<int64_t> scale_shape;
  if (c.quantization) {
    const WeightQuantization& q = *c.quantization;
    scale_shape = {(shape[0] + q.block_n - 1) / q.block_n, (shape[1] + q.block_k - 1) / q.block_k};
  }
  const std::string scale = ScaleInvName(name);
  const std::string weight = name;
  Add(out, std::move(name), std::move(shape), role, layer);
  if (c.quantization) {
    Add(out, scale, std::move(scale_shape), TensorRole::kLinearScale, layer, weight);
  }
}

// The dtype of a backbone Linear weight: a float type, or config.quantization's dtype.
Status CheckLinearDType(const ModelConfig& c, const ExpectedTensor& e, const TensorInfo& info,
                        const TensorStore& store) {
  if (IsFloat(info.dtype)) return Status::Ok();
  const bool quantized_type = info.dtype == DType::kF8E4M3 || info.dtype == DType::kI8;
  if (!quantized_type) {
    return InvalidArgument(
        "{}: tensor {} has dtype {}, expected a float type (F32, F16, BF16), or F8_E4M3 / I8 "
        "with quantization_config in config.json",
        FileOf(store, &info), e.name, DTypeName(info.dtype));
  }
  if (!c.quantization) {
    return InvalidArgument(
        "{}: tensor {} has dtype {}, but config.json has no quantization_config: a quantized "
        "Linear weight needs one saying how its weight_scale_inv blocks are laid out "
        "({{\"quant_method\": \"{}\", \"weight_block_size\": {}, \"activation_scheme\": "
        "\"dynamic\"}})",
        FileOf(store, &info), e.name, DTypeName(info.dtype),
        info.dtype == DType::kF8E4M3 ? "fp8" : "engram_int8",
        info.dtype == DType::kF8E4M3 ? "[128, 128]" : "[1, 32]");
  }
  if (info.dtype != c.quantization->weight_dtype()) {
    return InvalidArgument(
        "{}: tensor {} has dtype {}, but quantization_config.quant_method \"{}\" stores "
        "weights as {}",
        FileOf(store, &info), e.name, DTypeName(info.dtype), c.quantization->quant_method,
        DTypeName(c.quantization->weight_dtype()));
  }
  return Status::Ok();
}

// The dtype of a tensor that is not a scale: a float type, or F8_E4M3 where the Engram row
// path and the wkv projection dequantize it (and, for tables, only with rows of whole blocks).
Status CheckDType(const ModelConfig& c, const ExpectedTensor& e, const TensorInfo& info,
                  const TensorStore& store) {
  if (IsLinearRole(e.role)) return CheckLinearDType(c, e, info, store);
  if (IsFloat(info.dtype)) return Status::Ok();
  const bool fp8_ok = e.role == TensorRole::kEngramTable || e.role == TensorRole::kEngramWkv;
  if (info.dtype == DType::kF8E4M3 && !fp8_ok) {
    return InvalidArgument(
        "{}: tensor {} has dtype F8_E4M3, expected a float type (F32, F16, BF16): F8_E4M3 is "
        "accepted only for the Engram tables and wkv, and for the backbone's Linear weights "
        "with a quantization_config",
        FileOf(store, &info), e.name);
  }
  if (info.dtype == DType::kF8E4M3) {
    const int64_t dh = c.engram->head_dim();
    if (e.role == TensorRole::kEngramTable && dh % kFp8Block != 0) {
      return InvalidArgument(
          "{}: tensor {} is F8_E4M3, but its rows have {} values ({}), not a multiple of {}: "
          "FP8 rows carry one E8M0 scale per {} values",
          FileOf(store, &info), e.name, dh,
          c.engram->v41() ? "engram_head_dim" : "engram.n_embed_per_ngram / n_head_per_ngram",
          kFp8Block, kFp8Block);
    }
    return Status::Ok();
  }
  return InvalidArgument("{}: tensor {} has dtype {}, expected a float type (F32, F16, BF16{})",
                         FileOf(store, &info), e.name, DTypeName(info.dtype),
                         fp8_ok ? " or F8_E4M3 with F8_E8M0 scales" : "");
}

// A scale tensor `e` against the tensor it scales (checked before it: ExpectedTensors lists
// a scale after its tensor). Sets *present when the scale is required (and checked).
Status CheckScale(const ExpectedTensor& e, TensorRole scaled_role, const TensorStore& store,
                  bool* present) {
  *present = false;
  const TensorInfo* scaled = store.Info(e.scale_of);
  const TensorInfo* info = store.Info(e.name);
  const bool fp8 = scaled != nullptr && scaled->dtype == DType::kF8E4M3;
  if (!fp8) {
    if (info == nullptr) return Status::Ok();
    return InvalidArgument(
        "{}: tensor {} is present, but {} is {}, not F8_E4M3: E8M0 scales belong only to FP8 "
        "tensors, and these would be ignored (was the tensor dequantized without dropping its "
        "scales?)",
        FileOf(store, info), e.name, e.scale_of,
        scaled != nullptr ? DTypeName(scaled->dtype) : "absent");
  }
  const char* block =
      scaled_role == TensorRole::kEngramTable ? "32 values of each row" : "32x32 block";
  if (info == nullptr) {
    return NotFound(
        "{}: {}: missing; {} is F8_E4M3, which needs its F8_E8M0 scales {} (one per {})",
        FileOf(store, scaled), e.name, e.scale_of, e.shape, block);
  }
  if (info->dtype != DType::kF8E8M0) {
    return InvalidArgument(
        "{}: tensor {} has dtype {}, expected F8_E8M0 (the block scales of F8_E4M3 {})",
        FileOf(store, info), e.name, DTypeName(info->dtype), e.scale_of);
  }
  if (info->shape != e.shape) {
    return InvalidArgument(
        "{}: tensor {} has shape {}, expected {} (one F8_E8M0 scale per {} of {} {})",
        FileOf(store, info), e.name, info->shape, e.shape, block, e.scale_of, scaled->shape);
  }
  *present = true;
  return Status::Ok();
}

// A weight_scale_inv `e` (kLinearScale) against the weight it scales; *present as CheckScale.
Status CheckLinearScale(const ModelConfig& c, const ExpectedTensor& e, const TensorStore& store,
                        bool* present) {
  *present = false;
  const WeightQuantization& q = *c.quantization;
  const TensorInfo* scaled = store.Info(e.scale_of);
  const TensorInfo* info = store.Info(e.name);
  const bool quantized = scaled != nullptr && scaled->dtype == q.weight_dtype();
  if (!quantized) {
    if (info == nullptr) return Status::Ok();
    return InvalidArgument(
        "{}: tensor {} is present, but {} is {}, not {}: weight_scale_inv belongs only to "
        "quantized weights, and this one would be ignored (was the weight dequantized without "
        "dropping its scales?)",
        FileOf(store, info), e.name, e.scale_of,
        scaled != nullptr ? DTypeName(scaled->dtype) : "absent", DTypeName(q.weight_dtype()));
  }
  if (info == nullptr) {
    return NotFound(
        "{}: {}: missing; {} is {}, which needs its F32 block scales {} (one per {}x{} block, "
        "quantization_config.weight_block_size)",
        FileOf(store, scaled), e.name, e.scale_of, DTypeName(scaled->dtype), e.shape, q.block_n,
        q.block_k);
  }
  const bool dtype_ok = info->dtype == DType::kF32 || (q.fp8() && info->dtype == DType::kBF16);
  if (!dtype_ok) {
    return InvalidArgument("{}: tensor {} has dtype {}, expected F32{} (the block scales of {} {})",
                           FileOf(store, info), e.name, DTypeName(info->dtype),
                           q.fp8() ? " or BF16" : "", DTypeName(scaled->dtype), e.scale_of);
  }
  if (info->shape != e.shape) {
    return InvalidArgument(
        "{}: tensor {} has shape {}, expected {} (one scale per {}x{} block of {} {}, "
        "quantization_config.weight_block_size)",
        FileOf(store, info), e.name, info->shape, e.shape, q.block_n, q.block_k, e.scale_of,
        scaled->shape);
  }
  *present = true;
  return Status::Ok();
}

// Every value of a weight_scale_inv is finite and >= 0 (a negative or NaN scale would flip or
// poison the weights of its whole block).
Status CheckLinearScaleValues(const ExpectedTensor& e, const Tensor& t, const TensorStore& store) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  ConvertToF32(t.dtype, t.data, v.data(), v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (std::isfinite(v[i]) && v[i] >= 0.f) continue;
    const int64_t cols = t.dim(1);
    return InvalidArgument(
        "{}: tensor {} holds {} at [{}, {}], expected a finite scale >= 0 (the dequantized "
        "weight is q x scale_inv)",
        FileOf(store, store.Info(e.name)), e.name, v[i], static_cast<int64_t>(i) / cols,
        static_cast<int64_t>(i) % cols);
  }
  return Status::Ok();
}

// The role of each tensor a scale scales, by name.
std::map<std::string, TensorRole> ScaledRoles(const std::vector<ExpectedTensor>& expected) {
  std::map<std::string, TensorRole> roles;
  for (const ExpectedTensor& e : expected) {
    if (e.role == TensorRole::kEngramScale || e.role == TensorRole::kLinearScale) {
      roles[e.scale_of] = e.role;
    }
  }
  for (const ExpectedTensor& e : expected) {
    auto it = roles.find(e.name);
    if (it != roles.end()) it->second = e.role;
  }
  return roles;
}

}  // namespace

std::string EngramTableName(const EngramConfig& engram, int layer) {
  return EngramPrefix(layer) +
         (engram.v41() ? "embed.weight" : "multi_head_embedding.embedding.weight");
}

std::string EngramScaleName(const EngramConfig& engram, int layer) {
  return EngramPrefix(layer) +
         (engram.v41() ? "embed.scale" : "multi_head_embedding.embedding.scale");
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
    AddLinear(out, c, p + "self_attn.q_proj.weight", {q_dim, H}, TensorRole::kLinear, l);
    AddLinear(out, c, p + "self_attn.k_proj.weight", {kv_dim, H}, TensorRole::kLinear, l);
    AddLinear(out, c, p + "self_attn.v_proj.weight", {kv_dim, H}, TensorRole::kLinear, l);
    if (c.attention_bias) {
      Add(out, p + "self_attn.q_proj.bias", {q_dim}, TensorRole::kBias, l);
      Add(out, p + "self_attn.k_proj.bias", {kv_dim}, TensorRole::kBias, l);
      Add(out, p + "self_attn.v_proj.bias", {kv_dim}, TensorRole::kBias, l);
    }
    AddLinear(out, c, p + "self_attn.o_proj.weight", {H, q_dim}, TensorRole::kOutputLinear, l);
    Add(out, p + "post_attention_layernorm.weight", {H}, TensorRole::kNorm, l);
    AddLinear(out, c, p + "mlp.gate_proj.weight", {I, H}, TensorRole::kLinear, l);
    AddLinear(out, c, p + "mlp.up_proj.weight", {I, H}, TensorRole::kLinear, l);
    AddLinear(out, c, p + "mlp.down_proj.weight", {H, I}, TensorRole::kOutputLinear, l);
    const int e = c.engram ? c.engram->LayerIndex(l) : -1;
    if (e < 0) continue;
    const EngramConfig& ec = *c.engram;
    const std::string q = p + "engram.";
    const int64_t rows = geometry[static_cast<size_t>(e)].total_rows;
    const int64_t dh = ec.head_dim();
    const std::string table = EngramTableName(ec, l);
    Add(out, table, {rows, dh}, TensorRole::kEngramTable, l);
    Add(out, EngramScaleName(ec, l), {rows, Blocks(dh)}, TensorRole::kEngramScale, l, table);
    if (ec.v41()) {
      const int64_t wkv_out = int64_t{ec.hc_mult + 1} * H;
      const int64_t wkv_in = ec.engram_dim();
      Add(out, q + "wkv.weight", {wkv_out, wkv_in}, TensorRole::kEngramWkv, l);
      Add(out, q + "wkv.scale", {Blocks(wkv_out), Blocks(wkv_in)}, TensorRole::kEngramScale, l,
          q + "wkv.weight");
      Add(out, q + "q_weight", {ec.hc_mult, H}, TensorRole::kEngramGateW, l);
      Add(out, q + "k_weight", {ec.hc_mult, H}, TensorRole::kEngramGateW, l);
      continue;
    }
    AddLinear(out, c, q + "value_proj.weight", {H, ec.engram_dim()}, TensorRole::kEngramProj, l);
    Add(out, q + "value_proj.bias", {H}, TensorRole::kBias, l);
    AddLinear(out, c, q + "key_projs.0.weight", {H, ec.engram_dim()}, TensorRole::kEngramProj, l);
    Add(out, q + "key_projs.0.bias", {H}, TensorRole::kBias, l);
    Add(out, q + "norm1.0.weight", {H}, TensorRole::kNorm, l);
    Add(out, q + "norm2.0.weight", {H}, TensorRole::kNorm, l);
    if (ec.short_conv) {
      Add(out, q + "short_conv.conv.weight", {H, 1, ec.kernel_size}, TensorRole::kEngramConv, l);
      Add(out, q + "short_conv.norms.0.weight", {H}, TensorRole::kNorm, l);
    }
  }
  Add(out, "model.norm.weight", {H}, TensorRole::kNorm, -1);
  if (!c.tie_word_embeddings) AddLinear(out, c, "lm_head.weight", {V, H}, TensorRole::kLmHead, -1);
  return out;
}

Status CheckExpectedTensors(const ModelConfig& config, const TensorStore& store) {
  ENGRAM_ASSIGN_OR_RETURN(std::vector<ExpectedTensor> expected, ExpectedTensors(config));
  const std::map<std::string, TensorRole> scaled_roles = ScaledRoles(expected);
  for (const ExpectedTensor& e : expected) {
    if (e.role == TensorRole::kEngramScale) {
      bool present = false;
      ENGRAM_RETURN_IF_ERROR(CheckScale(e, scaled_roles.at(e.scale_of), store, &present));
      continue;
    }
    if (e.role == TensorRole::kLinearScale) {
      bool present = false;
      ENGRAM_RETURN_IF_ERROR(CheckLinearScale(config, e, store, &present));
      continue;
    }
    const TensorInfo* info = store.Info(e.name);
    if (info == nullptr) {
      return NotFound("{}: no tensor {} (config.json implies it: {} layers{})", store.source(),
                      e.name, config.num_hidden_layers,
                      !config.engram         ? ""
                      : config.engram->v41() ? ", Engram layers as engram_layer_ids"
                                             : ", Engram layers as engram.layer_ids");
    }
    if (info->shape != e.shape) {
      return InvalidArgument(
          "{}: tensor {} has shape {}, but config.json implies {} (hidden_size {}, "
          "intermediate_size {}, vocab_size {}, heads {}/{} x head_dim {})",
          info->file.empty() ? store.source() : info->file, e.name, info->shape, e.shape,
          config.hidden_size, config.intermediate_size, config.vocab_size,
          config.num_attention_heads, config.num_key_value_heads, config.head_dim);
    }
    ENGRAM_RETURN_IF_ERROR(CheckDType(config, e, *info, store));
  }
  return Status::Ok();
}

Result<HostWeights> LoadHostWeights(const ModelConfig& config, const TensorStore& store) {
  if (config.mlp_bias) {
    return Unimplemented("mlp_bias = true is not supported (Llama/Qwen2 MLPs have no biases)");
  }
  ENGRAM_ASSIGN_OR_RETURN(std::vector<ExpectedTensor> expected, ExpectedTensors(config));
  const std::map<std::string, TensorRole> scaled_roles = ScaledRoles(expected);
  std::map<std::string, Tensor> got;
  for (const ExpectedTensor& e : expected) {
    const bool scale = e.role == TensorRole::kEngramScale || e.role == TensorRole::kLinearScale;
    if (e.role == TensorRole::kEngramScale) {
      bool present = false;
      ENGRAM_RETURN_IF_ERROR(CheckScale(e, scaled_roles.at(e.scale_of), store, &present));
      if (!present) continue;
    }
    if (e.role == TensorRole::kLinearScale) {
      bool present = false;
      ENGRAM_RETURN_IF_ERROR(CheckLinearScale(config, e, store, &present));
      if (!present) continue;
    }
    ENGRAM_ASSIGN_OR_RETURN(Tensor t, store.GetChecked(e.name, e.shape));
    if (!scale) ENGRAM_RETURN_IF_ERROR(CheckDType(config, e, *store.Info(e.name), store));
    if (e.role == TensorRole::kLinearScale) {
      ENGRAM_RETURN_IF_ERROR(CheckLinearScaleValues(e, t, store));
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
  w.lm_head_s = take(ScaleInvName("lm_head.weight"));
  w.layers.resize(static_cast<size_t>(config.num_hidden_layers));
  for (int l = 0; l < static_cast<int>(config.num_hidden_layers); ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    LayerWeights& L = w.layers[static_cast<size_t>(l)];
    L.input_norm = take(p + "input_layernorm.weight");
    L.q_w = take(p + "self_attn.q_proj.weight");
    L.k_w = take(p + "self_attn.k_proj.weight");
    L.v_w = take(p + "self_attn.v_proj.weight");
    L.o_w = take(p + "self_attn.o_proj.weight");
    L.q_s = take(ScaleInvName(p + "self_attn.q_proj.weight"));
    L.k_s = take(ScaleInvName(p + "self_attn.k_proj.weight"));
    L.v_s = take(ScaleInvName(p + "self_attn.v_proj.weight"));
    L.o_s = take(ScaleInvName(p + "self_attn.o_proj.weight"));
    if (config.attention_bias) {
      L.q_b = take(p + "self_attn.q_proj.bias");
      L.k_b = take(p + "self_attn.k_proj.bias");
      L.v_b = take(p + "self_attn.v_proj.bias");
    }
    L.post_norm = take(p + "post_attention_layernorm.weight");
    L.gate_w = take(p + "mlp.gate_proj.weight");
    L.up_w = take(p + "mlp.up_proj.weight");
    L.down_w = take(p + "mlp.down_proj.weight");
    L.gate_s = take(ScaleInvName(p + "mlp.gate_proj.weight"));
    L.up_s = take(ScaleInvName(p + "mlp.up_proj.weight"));
    L.down_s = take(ScaleInvName(p + "mlp.down_proj.weight"));
    if (!config.engram || !config.engram->IsEngramLayer(l)) continue;
    const EngramConfig& ec = *config.engram;
    const std::string q = p + "engram.";
    EngramWeights E;
    E.table = take(EngramTableName(ec, l));
    E.table_scale = take(EngramScaleName(ec, l));
    if (ec.v41()) {
      E.wkv = take(q + "wkv.weight");
      E.wkv_scale = take(q + "wkv.scale");
      E.q_weight = take(q + "q_weight");
      E.k_weight = take(q + "k_weight");
      L.engram = std::move(E);
      continue;
    }
    E.value_w = take(q + "value_proj.weight");
    E.value_s = take(ScaleInvName(q + "value_proj.weight"));
    E.value_b = take(q + "value_proj.bias");
    E.key_w = take(q + "key_projs.0.weight");
    E.key_s = take(ScaleInvName(q + "key_projs.0.weight"));
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
