// Rotary-embedding inverse frequencies, with the Hugging Face rope_scaling variants.
#pragma once

#include <vector>

#include "model/config.h"

namespace engram {

// inv_freq[i] = 1 / theta^(2i / head_dim), i < head_dim / 2, computed in float32 as Hugging
// Face does, then scaled per config.rope_scaling ("linear": / factor; "llama3": the
// wavelength-banded scaling of Llama 3.1).
std::vector<float> RopeInvFreq(const ModelConfig& config);

}  // namespace engram
