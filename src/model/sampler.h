// Sampler: picks the next token from one row of logits, for one sequence.
//
// Per step: penalties (repetition over prompt + output tokens, presence/frequency over output
// tokens) -> greedy argmax at temperature 0, else softmax(logits / temperature) restricted by
// top_k, then top_p and min_p (both measured on the top_k distribution), drawn from a
// generator seeded with `seed`: the same params, seed and logits sequence give the same
// tokens. Penalties cost O(distinct tokens seen) per step: the Sampler keeps per-token
// counts, and copies the row into its own scratch only when a penalty is active. The
// caller's logits are never modified.
//
// Logprobs are the "processed" ones (vLLM's default): log_softmax of the logits after
// penalties, before temperature / top_k / top_p / min_p; computed max-shifted with double
// accumulation.
//
// One Sampler per sequence; not thread-safe. Scratch buffers are reused, so steady-state
// steps do not allocate (except SampleResult::top).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"

namespace engram {

struct SamplingParams {
  static constexpr int kMaxLogprobs = 20;
  static constexpr float kMaxAbsPenalty = 2.f;  // presence / frequency range [-2, 2]

  float temperature = 0.f;  // 0 = greedy
  int top_k = 0;            // 0 = off
  float top_p = 1.f;        // (0, 1]
  float min_p = 0.f;        // [0, 1)
  uint64_t seed = 0;
  // HF / vLLM: each token seen in the prompt or output has logit > 0 ? logit / p : logit * p.
  // > 0; 1 = off.
  float repetition_penalty = 1.f;
  // OpenAI / vLLM, output tokens only: logit -= presence * (count > 0) + frequency * count.
  // Both in [-2, 2]; 0 = off.
  float presence_penalty = 0.f;
  float frequency_penalty = 0.f;
  // Top alternatives to return with each token, [0, kMaxLogprobs]; 0 = none.
  int logprobs = 0;

  // INVALID_ARGUMENT naming the field and the allowed range.
  Status Validate() const;
  bool has_penalties() const {
    return repetition_penalty != 1.f || presence_penalty != 0.f || frequency_penalty != 0.f;
  }
  // Whether Sample picks Argmax of the raw logits: temperature 0 (top_k, top_p, min_p and seed
  // do not matter then) and no penalties. (Logprobs, when asked, still read the whole row.)
  bool is_plain_greedy() const { return temperature == 0.f && !has_penalties(); }
};

struct SampleResult {
  int32_t token = -1;
  float logprob = 0.f;                         // processed logprob of `token`
  std::vector<std::pair<int32_t, float>> top;  // (token, logprob), descending; ties: lower id
};

class Sampler {
 public:
  // `params` should have passed Validate.
  explicit Sampler(const SamplingParams& params) : p_(params), rng_(params.seed) {}

  // The prompt tokens (repetition penalty only). Replaces a previous prompt; output counts
  // are kept. Call before the first Sample for penalties to see the prompt.
  void SetPrompt(std::span<const int32_t> prompt);
  // Records a token appended to the output by other means than Sample (e.g. forced). Tokens
  // returned by Sample / SampleWithLogprobs are recorded already: do not Accept them.
  void Accept(int32_t token);

  // The next token; records it as output. logits: one row of the vocabulary (empty: -1).
  int32_t Sample(std::span<const float> logits);
  // As Sample, plus the sampled token's logprob and the top_n (clamped to [0, vocab]) best
  // tokens by processed logprob.
  SampleResult SampleWithLogprobs(std::span<const float> logits, int top_n);

  const SamplingParams& params() const { return p_; }
  // Output tokens recorded so far (Sample + Accept).
  int64_t output_tokens() const { return output_tokens_; }

 private:
  struct Seen {
    int32_t token;
    bool in_prompt;
    int32_t count;  // in the output
  };
  Seen& Slot(int32_t token);
  // The logits after penalties: `logits` itself or work_.
  std::span<const float> Penalized(std::span<const float> logits);
  int32_t Choose(std::span<const float> x);
  int32_t Draw(std::span<const float> x);
  // Ensures cand_[0, m) holds the m best candidates, sorted (descending, ties: lower id).
  void SortPrefix(size_t m);

  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<Seen> seen_;
  std::unordered_map<int32_t, uint32_t> slot_of_;  // token -> index in seen_
  int64_t output_tokens_ = 0;
  size_t sorted_ = 0;  // cand_[0, sorted_) is sorted (within one Draw)
  // Reused scratch.
  std::vector<float> work_;
  std::vector<std::pair<float, int32_t>> cand_;
  std::vector<double> weight_;  // by token id: exp(scaled logit - max)
};

// Index of the largest logit (the lowest index among ties).
int32_t Argmax(std::span<const float> logits);

// Whether a row of logits can be sampled from: it holds no NaN and its largest value is finite
// (no +inf, not all -inf). A row that fails this comes from overflowed weights or activations;
// the engine ends its request with INTERNAL instead of sampling garbage.
bool LogitsUsable(std::span<const float> logits);

// The greedy token of a row as Backend::ArgmaxRows gives it: Argmax when LogitsUsable, else
// kNoGreedyToken.
inline constexpr int32_t kNoGreedyToken = -1;
int32_t GreedyToken(std::span<const float> logits);

}  // namespace engram
