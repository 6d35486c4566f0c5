// Engram module kernels of the CPU backend: the gate and the causal short convolution with
// its per-sequence ring-buffer state. (Row gathers live in elementwise.h.) Shapes and indices
// are the caller's (the backend's) to check.
#pragma once

#include <cstdint>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/thread_pool.h"

namespace engram {

// Per token t < tokens: g = <RmsNorm(k[t]) * w_key, RmsNorm(h[t]) * w_query> / sqrt(d);
// g = sign(g) * sqrt(max(|g|, 1e-6)); v[t] *= sigmoid(g).
void EngramGateRows(CpuIsa isa, ThreadPool& pool, const float* k, const float* h,
                    const float* w_key, const float* w_query, float eps, int64_t tokens, int64_t d,
                    float* v);

struct ShortConvArgs {
  const float* v = nullptr;       // [tokens, d]
  const float* norm_w = nullptr;  // [d]
  const float* conv_w = nullptr;  // [d, kernel_size]
  int kernel_size = 0;
  int dilation = 0;
  float eps = 0.f;
  int64_t tokens = 0, d = 0;
  int num_seqs = 0;
  const int32_t* positions = nullptr;        // per token
  const int32_t* seq_of_token = nullptr;     // per token
  const int32_t* seq_token_start = nullptr;  // num_seqs + 1
  const int32_t* state_slots = nullptr;      // per sequence
  float* state = nullptr;      // [slots, (kernel_size - 1) * dilation, d], ring by position
  float* h = nullptr;          // [tokens, d], updated in place
  float* x_scratch = nullptr;  // [tokens, d] working memory
  float* w_scratch = nullptr;  // [kernel_size, d] working memory
};

// x = RmsNorm(v) * norm_w; y[t, c] = sum_i conv_w[c, i] * x(pos_t - (K-1-i) * dilation, c)
// with x before the sequence's first position in this step read from the state ring and x
// before position 0 zero; h[t] += v[t] + silu(y[t]). All reads of the state happen before
// the state is updated with x of each sequence's last (K-1) * dilation positions.
void EngramShortConv(CpuIsa isa, ThreadPool& pool, const ShortConvArgs& args);

}  // namespace engram
