// Sampler: picks the next token from one row of logits. Greedy at temperature 0; otherwise
// softmax(logits / temperature) restricted by top_k, top_p and min_p, drawn from a seeded
// generator, so the same seed gives the same tokens.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "common/status.h"

namespace engram {

struct SamplingParams {
  float temperature = 0.f;  // 0 = greedy
  int top_k = 0;            // 0 = off
  float top_p = 1.f;        // (0, 1]
  float min_p = 0.f;        // [0, 1)
  uint64_t seed = 0;
  // INVALID_ARGUMENT naming the field and the allowed range.
  Status Validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params) : p_(params), rng_(params.seed) {}
  int32_t Sample(std::span<const float> logits);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;  // reused scratch
};

// Index of the largest logit (the lowest index among ties).
int32_t Argmax(std::span<const float> logits);

}  // namespace engram
