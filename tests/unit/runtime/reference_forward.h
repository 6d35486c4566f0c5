// A float64 reference forward of the Llama + Engram model, written independently of the
// backends (plain loops over doubles), for the correctness tests. It computes the logits of
// every position of one sequence from the host weights.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/weights.h"
#include "prefetch/ngram_hasher.h"

namespace engram::testing {

// logits [T * vocab], row-major.
std::vector<double> ReferenceForward(const ModelConfig& config, const HostWeights& weights,
                                     const NgramHasher* hasher, const std::vector<int32_t>& ids);

// ||a - b|| / ||b|| over all elements.
double RelativeError(const std::vector<float>& a, const std::vector<double>& b);

}  // namespace engram::testing
