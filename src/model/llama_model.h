// LlamaModel: the Llama/Qwen2 backbone with Engram modules (the paper's or DeepSeek-V4.1's,
// hc_mult = 1) on a Backend. Holds the prepared weights and per-step scratch; the KV cache and
// Engram conv state are passed in, so several engines could share one model's weights.
//
// Thread safety: Forward is called from one thread at a time (the engine thread).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "model/config.h"
#include "model/engram_rows.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace engram {

class LlamaModel {
 public:
  // Prepares every weight on `backend` (q/k/v and gate/up fused into one matrix each). The
  // Engram tables are not prepared here: they belong to the tiering layer. `backend` must
  // outlive the model. host weights' memory must stay alive while the model lives (the CPU
  // backend may alias it).
  static Result<std::unique_ptr<LlamaModel>> Create(const ModelConfig& config,
                                                    const HostWeights& weights, Backend& backend);

  const ModelConfig& config() const { return config_; }
  Backend& backend() { return backend_; }
  // Engram conv state for `slots` sequences: one tensor per Engram layer,
  // F32 [slots, (K - 1) * N, hidden].
  Result<std::vector<Tensor>> AllocEngramState(int slots);

  // Runs the layers over the layout's tokens (layout already uploaded with UploadLayout),
  // writing their keys and values into `kv`, and returns logits F32 [logit_rows, vocab] on the
  // device for layout.logit_rows.
  // Activations live in scratch buffers that grow to the largest step seen and are reused, so a
  // step of a shape seen before allocates nothing and uses the same addresses (what lets the
  // engine capture Forward as a CUDA graph; the logits tensor is a view of that scratch).
  Result<Tensor> Forward(const BatchLayout& layout, EngramRowSource& rows, KvCache& kv,
                         std::vector<Tensor>& engram_state);
  // Increases whenever Forward reallocates its scratch (a bigger step than any before).
  uint64_t scratch_epoch() const { return scratch_epoch_; }

 private:
  struct EngramLayer {
    Tensor key_w, key_b, value_w, value_b, norm_key, norm_query, conv_w, conv_norm;
  };
  struct Layer {
    Tensor input_norm, qkv_w, qkv_b, o_w, post_norm, gate_up_w, down_w;
    int engram_index = -1;  // index into engram_, -1 for none
  };
  struct Scratch {
    int64_t capacity = 0;        // token rows of the activation buffers
    int64_t logit_capacity = 0;  // rows of sel / logits (the logit rows of a step)
    Tensor x, hn, qkv, attn, proj, gate_up, act, ek, ev, sel, logits;
  };

  LlamaModel(const ModelConfig& config, Backend& backend) : config_(config), backend_(backend) {}
  Status EnsureScratch(int64_t tokens, int64_t logit_rows);
  Status EngramForward(const EngramLayer& e, int engram_index, const BatchLayout& layout,
                       EngramRowSource& rows, std::vector<Tensor>& engram_state, Tensor& x,
                       int64_t T);

  ModelConfig config_;
  Backend& backend_;
  Tensor embed_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
  std::vector<EngramLayer> engram_;
  RopeParams rope_;
  AttentionParams attn_;
  Scratch s_;
  uint64_t scratch_epoch_ = 0;
};

}  // namespace engram
