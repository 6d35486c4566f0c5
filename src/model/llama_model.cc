#include "model/llama_model.h"

#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "common/fp8.h"
#include "model/rope.h"

namespace engram {
namespace {

// Stacks 2-D (or 1-D) float host tensors along the first dimension into one new host tensor
// (the q/k/v biases). Tensors of mixed dtypes are converted to F32.
Tensor ConcatRows(const std::vector<const Tensor*>& parts) {
  DType dt = parts[0]->dtype;
  for (const Tensor* p : parts) {
    if (p->dtype != dt) dt = DType::kF32;
  }
  int64_t rows = 0;
  const int64_t cols = parts[0]->shape.size() > 1 ? parts[0]->dim(1) : 1;
  for (const Tensor* p : parts) rows += p->dim(0);
  std::vector<int64_t> shape =
      parts[0]->shape.size() > 1 ? std::vector<int64_t>{rows, cols} : std::vector<int64_t>{rows};
  Tensor out = HostTensor(dt, shape);
  char* dst = out.ptr<char>();
  for (const Tensor* p : parts) {
    if (p->dtype == dt) {
      std::memcpy(dst, p->data, p->nbytes());
    } else {
      ConvertToF32(p->dtype, p->data, reinterpret_cast<float*>(dst),
                   static_cast<size_t>(p->numel()));
    }
    dst += p->numel() * static_cast<int64_t>(DTypeSize(dt));
  }
  return out;
}

// A backbone Linear weight as the files hold it (quantized with its scale_inv, or float).
LinearSource Source(const ModelConfig& c, const Tensor& w, const Tensor& scale_inv,
                    std::string name) {
  LinearSource s{w, scale_inv, 0, 0, std::move(name)};
  if (!scale_inv.empty() && c.quantization) {
    s.block_n = c.quantization->block_n;
    s.block_k = c.quantization->block_k;
  }
  return s;
}

// V4.1's fused wkv [(hc_mult + 1) * hidden, engram_dim] as F32 on the host: FP8 with its 32x32
// E8M0 tiles dequantized (the values are exact in F32), BF16/F16 widened.
Tensor WkvToF32(const EngramWeights& ew) {
  const int64_t rows = ew.wkv.dim(0), cols = ew.wkv.dim(1);
  Tensor out = HostTensor(DType::kF32, {rows, cols});
  if (ew.wkv.dtype == DType::kF8E4M3) {
    DequantFp8Tiles(ew.wkv.ptr<uint8_t>(), ew.wkv_scale.ptr<uint8_t>(), rows, cols,
                    out.ptr<float>());
  } else {
    ConvertToF32(ew.wkv.dtype, ew.wkv.data, out.ptr<float>(), static_cast<size_t>(rows * cols));
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<LlamaModel>> LlamaModel::Create(const ModelConfig& config,
                                                       const HostWeights& w, Backend& backend) {
  std::unique_ptr<LlamaModel> m(new LlamaModel(config, backend));
  auto prep = [&](const Tensor& t, WeightUse use) { return backend.PrepareWeight(t, use); };
  ENGRAM_ASSIGN_OR_RETURN(m->embed_, prep(w.embed, WeightUse::kEmbedding));
  ENGRAM_ASSIGN_OR_RETURN(m->final_norm_, prep(w.final_norm, WeightUse::kVector));
  ENGRAM_ASSIGN_OR_RETURN(
      m->lm_head_,
      backend.PrepareLinear(
          {Source(config, w.lm_head, w.lm_head_s,
                  config.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight")}));
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& lw = w.layers[l];
    Layer L;
    ENGRAM_ASSIGN_OR_RETURN(L.input_norm, prep(lw.input_norm, WeightUse::kVector));
    const std::string p = fmt::format("model.layers.{}.", l);
    ENGRAM_ASSIGN_OR_RETURN(
        L.qkv_w,
        backend.PrepareLinear({Source(config, lw.q_w, lw.q_s, p + "self_attn.q_proj.weight"),
                               Source(config, lw.k_w, lw.k_s, p + "self_attn.k_proj.weight"),
                               Source(config, lw.v_w, lw.v_s, p + "self_attn.v_proj.weight")}));
    if (config.attention_bias) {
      ENGRAM_ASSIGN_OR_RETURN(L.qkv_b,
                              prep(ConcatRows({&lw.q_b, &lw.k_b, &lw.v_b}), WeightUse::kVector));
    }
    ENGRAM_ASSIGN_OR_RETURN(
        L.o_w,
        backend.PrepareLinear({Source(config, lw.o_w, lw.o_s, p + "self_attn.o_proj.weight")}));
    ENGRAM_ASSIGN_OR_RETURN(L.post_norm, prep(lw.post_norm, WeightUse::kVector));
    ENGRAM_ASSIGN_OR_RETURN(
        L.gate_up_w,
        backend.PrepareLinear({Source(config, lw.gate_w, lw.gate_s, p + "mlp.gate_proj.weight"),
                               Source(config, lw.up_w, lw.up_s, p + "mlp.up_proj.weight")}));
    ENGRAM_ASSIGN_OR_RETURN(
        L.down_w,
        backend.PrepareLinear({Source(config, lw.down_w, lw.down_s, p + "mlp.down_proj.weight")}));
    if (lw.engram && config.engram->v41()) {
      // One module with switches: V4.1's key and value are the two halves of wkv's output
      // (no biases), its gate weights q_weight[0] and k_weight[0] take the places of the
      // query and key norms (the gate multiplies both into one dot product), and it has no
      // short conv (config: short_conv false, norm_eps 1e-20).
      const EngramWeights& ew = *lw.engram;
      const int64_t H = config.hidden_size;
      const Tensor wkv = WkvToF32(ew);
      EngramLayer E;
      ENGRAM_ASSIGN_OR_RETURN(E.key_w, prep(wkv.Rows(0, H), WeightUse::kLinear));
      ENGRAM_ASSIGN_OR_RETURN(E.value_w, prep(wkv.Rows(H, 2 * H), WeightUse::kLinear));
      ENGRAM_ASSIGN_OR_RETURN(E.norm_key, prep(ew.k_weight.Reshaped({H}), WeightUse::kVector));
      ENGRAM_ASSIGN_OR_RETURN(E.norm_query, prep(ew.q_weight.Reshaped({H}), WeightUse::kVector));
      L.engram_index = static_cast<int>(m->engram_.size());
      m->engram_.push_back(std::move(E));
    } else if (lw.engram) {
      const EngramWeights& ew = *lw.engram;
      EngramLayer E;
      const std::string q = p + "engram.";
      ENGRAM_ASSIGN_OR_RETURN(
          E.key_w,
          backend.PrepareLinear({Source(config, ew.key_w, ew.key_s, q + "key_projs.0.weight")}));
      ENGRAM_ASSIGN_OR_RETURN(E.key_b, prep(ew.key_b, WeightUse::kVector));
      ENGRAM_ASSIGN_OR_RETURN(
          E.value_w,
          backend.PrepareLinear({Source(config, ew.value_w, ew.value_s, q + "value_proj.weight")}));
      ENGRAM_ASSIGN_OR_RETURN(E.value_b, prep(ew.value_b, WeightUse::kVector));
      ENGRAM_ASSIGN_OR_RETURN(E.norm_key, prep(ew.norm_key, WeightUse::kVector));
      ENGRAM_ASSIGN_OR_RETURN(E.norm_query, prep(ew.norm_query, WeightUse::kVector));
      if (config.engram->short_conv) {
        // [hidden, 1, K] -> [hidden, K]
        Tensor cw = ew.conv_w.Reshaped({ew.conv_w.dim(0), ew.conv_w.dim(2)});
        ENGRAM_ASSIGN_OR_RETURN(E.conv_w, prep(cw, WeightUse::kVector));
        ENGRAM_ASSIGN_OR_RETURN(E.conv_norm, prep(ew.conv_norm, WeightUse::kVector));
      }
      L.engram_index = static_cast<int>(m->engram_.size());
      m->engram_.push_back(std::move(E));
    }
    m->layers_.push_back(std::move(L));
  }

  const std::vector<float> inv = RopeInvFreq(config);
  ENGRAM_ASSIGN_OR_RETURN(m->rope_.inv_freq,
                          backend.Alloc(DType::kF32, {static_cast<int64_t>(inv.size())}));
  ENGRAM_RETURN_IF_ERROR(backend.CopyFromHost(inv.data(), m->rope_.inv_freq));
  m->rope_.num_q_heads = static_cast<int>(config.num_attention_heads);
  m->rope_.num_kv_heads = static_cast<int>(config.num_key_value_heads);
  m->rope_.head_dim = static_cast<int>(config.head_dim);
  m->attn_.num_q_heads = m->rope_.num_q_heads;
  m->attn_.num_kv_heads = m->rope_.num_kv_heads;
  m->attn_.head_dim = m->rope_.head_dim;
  m->attn_.scale = 1.0f / std::sqrt(static_cast<float>(config.head_dim));
  return m;
}

Result<std::vector<Tensor>> LlamaModel::AllocEngramState(int slots) {
  std::vector<Tensor> state;
  if (!config_.engram || !config_.engram->short_conv) return state;
  const EngramConfig& e = *config_.engram;
  const int64_t window = int64_t{e.kernel_size - 1} * e.max_ngram_size;
  for (size_t i = 0; i < engram_.size(); ++i) {
    ENGRAM_ASSIGN_OR_RETURN(
        Tensor t, backend_.AllocZeros(DType::kF32,
                                      {slots, std::max<int64_t>(window, 1), config_.hidden_size}));
    state.push_back(std::move(t));
  }
  return state;
}

Status LlamaModel::EnsureScratch(int64_t T, int64_t R) {
  // Token buffers hold T rows; the logit buffers only R (<= T): at an 8192-token prefill step
  // with a 128k vocabulary, T rows of logits would be 4 GiB.
  const int64_t rows = std::max<int64_t>(R, 1);
  if (T <= s_.capacity && rows <= s_.logit_capacity) return Status::Ok();
  ++scratch_epoch_;  // first: a failure halfway leaves some buffers replaced already
  auto alloc = [&](int64_t n, int64_t cols) { return backend_.Alloc(DType::kF32, {n, cols}); };
  const int64_t H = config_.hidden_size;
  if (T > s_.capacity) {
    const int64_t qkv =
        (config_.num_attention_heads + 2 * config_.num_key_value_heads) * config_.head_dim;
    const int64_t I = config_.intermediate_size;
    ENGRAM_ASSIGN_OR_RETURN(s_.x, alloc(T, H));
    ENGRAM_ASSIGN_OR_RETURN(s_.hn, alloc(T, H));
    ENGRAM_ASSIGN_OR_RETURN(s_.qkv, alloc(T, qkv));
    ENGRAM_ASSIGN_OR_RETURN(s_.attn, alloc(T, config_.num_attention_heads * config_.head_dim));
    ENGRAM_ASSIGN_OR_RETURN(s_.proj, alloc(T, H));
    ENGRAM_ASSIGN_OR_RETURN(s_.gate_up, alloc(T, 2 * I));
    ENGRAM_ASSIGN_OR_RETURN(s_.act, alloc(T, I));
    ENGRAM_ASSIGN_OR_RETURN(s_.ek, alloc(T, H));
    ENGRAM_ASSIGN_OR_RETURN(s_.ev, alloc(T, H));
    s_.capacity = T;
  }
  if (rows > s_.logit_capacity) {
    ENGRAM_ASSIGN_OR_RETURN(s_.sel, alloc(rows, H));
    ENGRAM_ASSIGN_OR_RETURN(s_.logits, alloc(rows, config_.vocab_size));
    s_.logit_capacity = rows;
  }
  return Status::Ok();
}

Status LlamaModel::EngramForward(const EngramLayer& e, int ei, const BatchLayout& layout,
                                 EngramRowSource& rows, std::vector<Tensor>& state, Tensor& x,
                                 int64_t T) {
  const EngramConfig& ec = *config_.engram;
  ENGRAM_ASSIGN_OR_RETURN(Tensor r, rows.WaitRows(ei));
  if (r.dim(0) != T || r.dim(1) != ec.engram_dim()) {
    return Internal("Engram layer {}: rows {} do not match [{}, {}]", ei, r.ShapeString(), T,
                    ec.engram_dim());
  }
  Tensor k = s_.ek.Rows(0, T), v = s_.ev.Rows(0, T);
  ENGRAM_RETURN_IF_ERROR(backend_.Linear(r, e.key_w, e.key_b.empty() ? nullptr : &e.key_b, k));
  ENGRAM_RETURN_IF_ERROR(
      backend_.Linear(r, e.value_w, e.value_b.empty() ? nullptr : &e.value_b, v));
  ENGRAM_RETURN_IF_ERROR(
      backend_.EngramGate(k, x, e.norm_key, e.norm_query, static_cast<float>(ec.norm_eps), v));
  if (!ec.short_conv) return backend_.Add(x, v);
  EngramConvParams p;
  p.kernel_size = ec.kernel_size;
  p.dilation = ec.max_ngram_size;
  p.norm_eps = static_cast<float>(ec.conv_norm_eps);
  return backend_.EngramShortConv(v, e.conv_norm, e.conv_w, p, layout, state[ei], x);
}

Result<Tensor> LlamaModel::Forward(const BatchLayout& layout, EngramRowSource& rows, KvCache& kv,
                                   std::vector<Tensor>& engram_state) {
  const int64_t T = layout.num_tokens();
  const int64_t R = static_cast<int64_t>(layout.logit_rows.size());
  if (T == 0) return InvalidArgument("forward over an empty batch");
  ENGRAM_RETURN_IF_ERROR(EnsureScratch(T, R));
  const float eps = static_cast<float>(config_.rms_norm_eps);
  Tensor x = s_.x.Rows(0, T), hn = s_.hn.Rows(0, T), qkv = s_.qkv.Rows(0, T);
  Tensor attn = s_.attn.Rows(0, T), proj = s_.proj.Rows(0, T);
  Tensor gate_up = s_.gate_up.Rows(0, T), act = s_.act.Rows(0, T);

  ENGRAM_RETURN_IF_ERROR(backend_.Embedding(embed_, layout.dev.token_ids, x));
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    if (L.engram_index >= 0) {
      ENGRAM_RETURN_IF_ERROR(
          EngramForward(engram_[L.engram_index], L.engram_index, layout, rows, engram_state, x, T));
    }
    ENGRAM_RETURN_IF_ERROR(backend_.RmsNorm(x, L.input_norm, eps, hn));
    ENGRAM_RETURN_IF_ERROR(backend_.Linear(hn, L.qkv_w, L.qkv_b.empty() ? nullptr : &L.qkv_b, qkv));
    ENGRAM_RETURN_IF_ERROR(backend_.Rope(qkv, layout, rope_));
    ENGRAM_RETURN_IF_ERROR(backend_.PagedAttention(qkv, kv.k(static_cast<int>(l)),
                                                   kv.v(static_cast<int>(l)), layout, attn_, attn));
    ENGRAM_RETURN_IF_ERROR(backend_.Linear(attn, L.o_w, nullptr, proj));
    ENGRAM_RETURN_IF_ERROR(backend_.Add(x, proj));
    ENGRAM_RETURN_IF_ERROR(backend_.RmsNorm(x, L.post_norm, eps, hn));
    ENGRAM_RETURN_IF_ERROR(backend_.Linear(hn, L.gate_up_w, nullptr, gate_up));
    ENGRAM_RETURN_IF_ERROR(backend_.SwiGlu(gate_up, act));
    ENGRAM_RETURN_IF_ERROR(backend_.Linear(act, L.down_w, nullptr, proj));
    ENGRAM_RETURN_IF_ERROR(backend_.Add(x, proj));
  }
  Tensor sel = s_.sel.Rows(0, R), logits = s_.logits.Rows(0, R);
  if (R == 0) return logits;  // only prompt chunks whose logits nobody reads
  ENGRAM_RETURN_IF_ERROR(backend_.Embedding(x, layout.dev.logit_rows, sel));
  ENGRAM_RETURN_IF_ERROR(backend_.RmsNorm(sel, final_norm_, eps, sel));
  ENGRAM_RETURN_IF_ERROR(backend_.Linear(sel, lm_head_, nullptr, logits));
  return logits;
}

}  // namespace engram
